"""Login, the session cookie, CSRF, logout; and that the console never shadows the API."""

from __future__ import annotations

from quart import typing as qt

from procella import create_app
from procella.auth.models import Role
from procella.settings import Settings
from tests.conftest import ADMIN_TOKEN
from tests.console.conftest import Browser
from tests.helpers import assert_error, make_token, services_of


def _cookie(page_headers: object, name: str) -> str:
    found = [c for c in page_headers.get_all("Set-Cookie") if c.startswith(f"{name}=")]  # type: ignore[attr-defined]
    assert len(found) == 1, found
    return str(found[0])


async def test_pages_need_a_login_and_come_back_after_it(browser: Browser) -> None:
    page = await browser.get("/acme?project=web")
    assert page.status == 302
    assert page.headers["Location"] == "/login?next=/acme?project%3Dweb"
    login = await browser.get(page.headers["Location"])
    assert login.status == 200
    assert 'name="next" value="/acme?project=web"' in login.text
    done = await browser.post("/login", {"token": ADMIN_TOKEN, "next": "/acme?project=web"})
    assert done.status == 302 and done.headers["Location"] == "/acme?project=web"


async def test_the_session_cookie_is_httponly_lax_and_secure_only_over_tls(
    app: qt.TestAppProtocol, browser: Browser
) -> None:
    page = await browser.login(ADMIN_TOKEN)
    cookie = _cookie(page.headers, "procella_session")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie
    assert ADMIN_TOKEN not in cookie  # encrypted, not only signed
    browser = Browser(app.test_client())
    await browser.get("/login", headers={"X-Forwarded-Proto": "https"})
    response = await browser.client.post(
        "/login",
        form={"token": ADMIN_TOKEN, "csrf": browser.csrf, "next": "/"},
        headers={"X-Forwarded-Proto": "https"},
    )
    assert "Secure" in _cookie(response.headers, "procella_session")


async def test_a_wrong_token_is_refused_on_the_login_page(browser: Browser) -> None:
    await browser.get("/login")
    page = await browser.post("/login", {"token": "pul-" + "0" * 40})
    assert page.status == 401
    assert "invalid access token" in page.text and "<form" in page.text
    assert (await browser.get("/acme")).status == 302


async def test_login_and_logout_need_the_forms_csrf_token(browser: Browser) -> None:
    page = await browser.post("/login", {"token": ADMIN_TOKEN}, csrf=False)
    assert page.status == 400 and "text/html" in page.headers["Content-Type"]
    await browser.get("/login")
    page = await browser.post("/login", {"token": ADMIN_TOKEN, "csrf": "forged"}, csrf=False)
    assert page.status == 400
    assert (await browser.login(ADMIN_TOKEN)).status == 302
    assert (await browser.post("/logout", {}, csrf=False)).status == 400
    assert (await browser.get("/organization")).status == 200
    out = await browser.post("/logout", {})
    assert out.status == 302 and out.headers["Location"] == "/login"
    assert (await browser.get("/organization")).status == 302


async def test_next_never_leaves_the_site(app: qt.TestAppProtocol) -> None:
    for target in ("//evil.example/x", "https://evil.example", "/\\evil.example"):
        browser = Browser(app.test_client())
        await browser.get("/login")
        page = await browser.post("/login", {"token": ADMIN_TOKEN, "next": target})
        assert page.status == 302 and page.headers["Location"] == "/", target


async def test_a_tampered_cookie_is_no_session(browser: Browser) -> None:
    page = await browser.login(ADMIN_TOKEN)
    value = _cookie(page.headers, "procella_session").split(";")[0].split("=", 1)[1]
    forged = value[:-4] + ("AAAA" if not value.endswith("AAAA") else "BBBB")
    browser.client.set_cookie("localhost", "procella_session", forged)
    assert (await browser.get("/organization")).status == 302


async def test_a_revoked_token_ends_its_sessions(app: qt.TestAppProtocol, browser: Browser) -> None:
    token = await make_token(app, "acme", Role.VIEWER, "vera")
    assert (await browser.login(token)).status == 302
    assert (await browser.get("/acme")).status == 200
    auth = services_of(app).auth
    principal = await auth.authenticate(token)
    await auth.revoke_token(None, None, principal.token_id)
    assert (await browser.get("/acme")).status == 302


async def test_any_replica_with_the_same_settings_reads_the_session(
    settings: Settings, browser: Browser
) -> None:
    await browser.login(ADMIN_TOKEN)
    cookie = browser.client.cookie_jar
    async with create_app(settings).test_app() as other:
        client = other.test_client()
        client.cookie_jar = cookie
        assert (await client.get("/organization")).status_code == 200
    changed = settings.replace(console_session_key="ab" * 32)
    async with create_app(changed).test_app() as rotated:
        client = rotated.test_client()
        client.cookie_jar = cookie
        assert (await client.get("/organization")).status_code == 302


async def test_the_console_never_shadows_the_servers_own_paths(browser: Browser) -> None:
    await browser.login(ADMIN_TOKEN)
    for path in ("/api/nope/x/y", "/api/x", "/api", "/healthz/x/y"):
        await assert_error(await browser.client.get(path), 404)
    assert (await browser.client.get("/healthz")).status_code == 200
    response = await browser.client.get("/metrics")
    assert (
        response.status_code == 200 and b"procella_http_requests_total" in await response.get_data()
    )


async def test_pages_are_not_framed_cached_or_sniffed(browser: Browser) -> None:
    await browser.login(ADMIN_TOKEN)
    for path in ("/login", "/organization", "/account/tokens", "/nope-path-x/y/z/updates/1"):
        page = await browser.get(path)
        csp = page.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
        assert page.headers["Cache-Control"] == "no-store"
        assert page.headers["X-Content-Type-Options"] == "nosniff"
    response = await browser.client.get("/_console/static/console.css")
    assert response.status_code == 200 and "no-store" not in response.headers.get(
        "Cache-Control", ""
    )
