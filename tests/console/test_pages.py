"""Every console page, for every role: what a viewer, member and admin see, what an
outsider cannot see (the API's 404), bad input as HTML error pages with the right status."""

from __future__ import annotations

import json
from typing import Any

import pytest
from quart import typing as qt

from procella import create_app
from procella.auth.models import Role
from procella.settings import Settings
from tests.conftest import ADMIN_TOKEN
from tests.console.conftest import BUCKET_URN, ORG, SECRET, STACK, Browser, Seeded
from tests.helpers import Api, assert_ok, body_json, services_of, step_event

READ_PAGES = (
    "/acme",
    "/acme?project=web",
    "/acme/web/dev",
    "/acme/web/dev?page=1",
    "/acme/web/dev/updates/1",
    "/acme/web/dev/updates/2",
    "/acme/web/dev/updates/2/events?after=0",
    "/acme/web/dev/previews/{preview}",
    "/acme/web/dev/previews/{preview}/events",
    f"/acme/web/dev/resources/{BUCKET_URN}",
    "/acme/web/dev/diff",
    "/acme/web/dev/diff?from=0&to=2",
    "/account/tokens",
    "/user/settings/tokens",
)


def _paths(seeded: Seeded) -> list[str]:
    return [p.format(preview=seeded.preview_id) for p in READ_PAGES]


@pytest.mark.parametrize("role", [Role.VIEWER, Role.MEMBER, Role.ADMIN])
async def test_every_page_reads_for_every_role(as_user: Any, seeded: Seeded, role: Role) -> None:
    browser = await as_user(role, f"user-{role.name.lower()}")
    for path in _paths(seeded):
        page = await browser.get(path)
        assert page.status == 200, (path, page.text[:300])
    assert (await browser.get("/acme/project-only")).status == 302


async def test_an_outsider_sees_nothing_of_another_org(as_user: Any, seeded: Seeded) -> None:
    browser = await as_user(Role.ADMIN, "olga", org="other")
    for path in _paths(seeded):
        if path.startswith(("/account", "/user")):
            continue
        page = await browser.get(path)
        assert page.status == 404, (path, page.status)
        assert "text/html" in page.headers["Content-Type"]
        assert "hunter2" not in page.text and "bucket" not in page.text.replace(path, "")
    page = await browser.post("/acme/web/dev/outputs/reveal", {"name": "password"})
    assert page.status == 404
    assert (await browser.get("/other/x/y")).status == 200
    assert (await browser.get("/nope-org")).status == 404


async def test_the_org_page_lists_filters_and_searches(browser: Browser, seeded: Seeded) -> None:
    await browser.login(ADMIN_TOKEN)
    page = await browser.get("/acme")
    assert ">dev</a>" in page.text and ">prod</a>" in page.text
    assert "update #2" in page.text and "status-failed" in page.text
    assert "env: dev" in page.text and "team: web" in page.text
    only_api = await browser.get("/acme?project=api")
    assert ">prod</a>" in only_api.text and ">dev</a>" not in only_api.text
    tagged = await browser.get("/acme?tag=env%3Ddev")
    assert ">dev</a>" in tagged.text and ">prod</a>" not in tagged.text
    searched = await browser.get("/acme?q=PRO")
    assert ">prod</a>" in searched.text and ">dev</a>" not in searched.text
    assert "No stacks match" in (await browser.get("/acme?q=zzz")).text
    assert (await browser.get("/acme?project=bad%20name")).status == 400
    assert (await browser.get("/acme?tag=b%20d")).status == 400


async def test_the_stack_page(browser: Browser, seeded: Seeded) -> None:
    await browser.login(ADMIN_TOKEN)
    page = await browser.get("/acme/web/dev")
    text = page.text
    assert "Version 2" in text and "3 resources" in text
    assert "&#34;http://bucket.example&#34;" in text  # a plain output
    assert "[secret]" in text and "hunter2" not in text
    assert "env: dev" in text
    # The tree: the bucket under the stack, with its provider and protect flag.
    assert (
        'class="depth-1"><a href="/acme/web/dev/resources/' in text
        and ">bucket</a>" in text
        and "protected" in text
    )
    assert ">#2</a>" in text and ">#1</a>" in text and "preview by admin" in text
    assert "<code>3 created</code>" in text  # update 1's changes, as the CLI words them


async def test_a_secret_is_revealed_only_to_members_and_audited(
    as_user: Any, seeded: Seeded, api: Api
) -> None:
    viewer = await as_user(Role.VIEWER, "vic")
    assert "Reveal</button>" not in (await viewer.get("/acme/web/dev")).text
    page = await viewer.post("/acme/web/dev/outputs/reveal", {"name": "password"})
    assert page.status == 403 and "hunter2" not in page.text
    member = await as_user(Role.MEMBER, "meg")
    await member.get("/acme/web/dev")
    assert (
        await member.post("/acme/web/dev/outputs/reveal", {"name": "password"}, csrf=False)
    ).status == 400
    page = await member.post("/acme/web/dev/outputs/reveal", {"name": "password"})
    assert (
        page.status == 200
        and f'<code class="revealed">{SECRET.replace(chr(34), "&#34;")}' in page.text
    )
    assert (await member.post("/acme/web/dev/outputs/reveal", {"name": "url"})).status == 404
    log = await body_json(await api.call("GET", f"/api/orgs/{ORG}/auditlogs/v2"))
    decrypts = [e for e in log["auditLogEvents"] if e["event"] == "secrets.decrypt"]
    assert [e["user"]["githubLogin"] for e in decrypts] == ["meg"]


async def test_the_update_page_prints_events_as_the_cli(browser: Browser, seeded: Seeded) -> None:
    await browser.login(ADMIN_TOKEN)
    first = (await browser.get("/acme/web/dev/updates/1")).text
    assert "+ </span> pulumi-python:dynamic:Resource bucket created" in first
    assert "warning: bucket is public" in first and "fg 3" not in first  # colors stripped
    assert "3 created" in first and "first deploy" in first and "Duration" in first
    second = (await browser.get("/acme/web/dev/updates/2")).text
    assert "bucket **updating failed**" in second and "error: quota exceeded" in second
    assert "2 unchanged" in second and "status-failed" in second
    events = json.loads((await browser.get("/acme/web/dev/updates/2/events?after=2")).text)
    assert events["done"] is True and events["after"] == 4
    assert [line["kind"] for line in events["lines"]] == ["error"]
    preview = (await browser.get(f"/acme/web/dev/previews/{seeded.preview_id}")).text
    assert "Previewing update (dev)" in preview and "bucket update</div>" in preview


async def test_a_running_update_is_followed(browser: Browser, seeded: Seeded, api: Api) -> None:
    await browser.login(ADMIN_TOKEN)
    running = await api.started(STACK)
    page = await browser.get("/acme/web/dev/updates/3")
    assert 'data-live="true"' in page.text and "follow.js" in page.text
    assert "follow it</a>" in (await browser.get("/acme/web/dev")).text
    meta = {"type": "pulumi-python:dynamic:Resource", "urn": BUCKET_URN}
    await assert_ok(
        await api.events(running, [step_event(1, "resourcePreEvent", "delete", meta, None)]), 204
    )
    polled = json.loads((await browser.get("/acme/web/dev/updates/3/events?after=0")).text)
    assert polled["done"] is False and polled["status"] == "running"
    assert polled["lines"][0]["text"].endswith("bucket deleting") and polled["after"] == 1
    await assert_ok(await api.complete(running), 204)
    polled = json.loads((await browser.get("/acme/web/dev/updates/3/events?after=1")).text)
    assert polled["done"] is True and polled["lines"] == []


async def test_resource_and_diff_pages(browser: Browser, seeded: Seeded) -> None:
    await browser.login(ADMIN_TOKEN)
    page = await browser.get(f"/acme/web/dev/resources/{BUCKET_URN}")
    assert "b-1" in page.text and "[secret]" in page.text and "<td>yes</td>" in page.text
    old = await browser.get(f"/acme/web/dev/resources/{BUCKET_URN}?version=1")
    assert "&#34;size&#34;: 1" in old.text
    diff = await browser.get("/acme/web/dev/diff?from=1&to=2")
    assert "inputs.size" in diff.text and "inputs.token" not in diff.text  # secrets compare equal
    created = await browser.get("/acme/web/dev/diff?from=0&to=1")
    assert created.text.count("change-added") == 3


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/acme/web/dev/updates/9", 404),
        ("/acme/web/dev/updates/9/events", 404),
        ("/acme/web/dev/previews/nope", 404),
        ("/acme/web/dev/previews/" + "0" * 32, 404),
        ("/acme/web/dev/resources/urn:pulumi:dev::web::x::nope", 404),
        ("/acme/web/dev/resources/" + BUCKET_URN + "?version=9", 404),
        ("/acme/web/dev/diff?from=0&to=9", 404),
        ("/acme/web/dev/diff?from=x", 400),
        ("/acme/web/dev?page=-1", 400),
        ("/acme/web/nope", 404),
        ("/acme/web/bad%20name", 400),
        ("/acme/bad%20name/dev", 400),
        ("/acme/web/dev/updates/abc", 404),
        ("/acme/web/dev/nonsense/a/b", 404),
    ],
)
async def test_bad_input_gets_an_html_error_page(
    browser: Browser, seeded: Seeded, path: str, status: int
) -> None:
    await browser.login(ADMIN_TOKEN)
    page = await browser.get(path)
    assert page.status == status, (path, page.text[:300])
    assert "text/html" in page.headers["Content-Type"] and f">{status}</h1>" in page.text


async def test_the_console_writes_nothing_but_tokens(browser: Browser, seeded: Seeded) -> None:
    await browser.login(ADMIN_TOKEN)
    for path in ("/acme", "/acme/web/dev", "/acme/web/dev/updates/1", "/acme/web/dev/diff"):
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            response = await browser.client.open(path, method=method)  # type: ignore[call-arg]
            assert response.status_code == 405, (method, path)


async def test_own_tokens_are_created_listed_and_revoked(
    app: qt.TestAppProtocol, as_user: Any, api: Api, seeded: Seeded
) -> None:
    member = await as_user(Role.MEMBER, "tom")
    page = await member.get("/account/tokens")
    assert page.status == 200 and page.text.count("<tr>") == 2  # head, the login token
    assert (await member.post("/account/tokens", {"name": "ci"}, csrf=False)).status == 400
    made = await member.post("/account/tokens", {"name": "ci", "expires_days": "7"})
    assert made.status == 201
    token = made.text.split('<code id="new-token">')[1].split("</code>")[0]
    user = await body_json(await api.as_token(token).call("GET", "/api/user"))
    assert user["githubLogin"] == "tom"
    assert (await member.post("/account/tokens", {"name": "ci"})).status == 409
    assert (await member.post("/account/tokens", {"name": " "})).status == 400
    assert (await member.post("/account/tokens", {"name": "x", "expires_days": "2"})).status == 400
    listed = await member.get("/account/tokens")
    assert ">ci</td>" in listed.text
    token_id = (await services_of(app).auth.authenticate(token)).token_id
    # Someone else's token cannot be revoked here, even by an org admin.
    admin = await as_user(Role.ADMIN, "ada")
    await admin.get("/account/tokens")
    assert (await admin.post(f"/account/tokens/{token_id}/revoke", {})).status == 404
    assert (await member.post(f"/account/tokens/{token_id}/revoke", {})).status == 302
    response = await api.as_token(token).call("GET", "/api/user")
    assert response.status_code == 401
    log = await body_json(await api.call("GET", f"/api/orgs/{ORG}/auditlogs/v2"))
    events = [(e["event"], e["user"]["githubLogin"]) for e in log["auditLogEvents"]]
    assert ("token.create", "tom") in events and ("token.revoke", "tom") in events


async def test_any_replica_follows_an_update_another_one_records(
    settings: Settings, seeded: Seeded, api: Api
) -> None:
    """The update's events arrive at one replica (the fixture's app) and another replica
    (a second app on the same database and blob store) shows them live."""
    running = await api.started(STACK)
    async with create_app(settings).test_app() as replica:
        browser = Browser(replica.test_client())
        await browser.login(ADMIN_TOKEN)
        assert 'data-live="true"' in (await browser.get("/acme/web/dev/updates/3")).text
        meta = {"type": "pulumi-python:dynamic:Resource", "urn": BUCKET_URN}
        event = step_event(1, "resourcePreEvent", "update", meta, meta)
        await assert_ok(await api.events(running, [event]), 204)
        polled = json.loads((await browser.get("/acme/web/dev/updates/3/events")).text)
        assert polled["lines"][0]["text"].endswith("bucket updating") and not polled["done"]
        await assert_ok(await api.complete(running, "failed"), 204)
        polled = json.loads((await browser.get("/acme/web/dev/updates/3/events?after=1")).text)
        assert polled["done"] is True and polled["status"] == "failed"


async def test_pulumi_login_in_the_browser(as_user: Any, api: Api, browser: Browser) -> None:
    """The CLI's browser login: /cli-login, a confirmation (CSRF), a new token of the user's
    sent to the CLI's listener on 127.0.0.1 with its nonce; then /welcome/cli."""
    nonce = "ab" * 32
    query = f"cliSessionPort=43123&cliSessionNonce={nonce}&cliSessionDescription=laptop"
    anonymous = await browser.get(f"/cli-login?{query}")
    assert anonymous.status == 302 and anonymous.headers["Location"].startswith("/login?next=")
    member = await as_user(Role.MEMBER, "cleo")
    page = await member.get(f"/cli-login?{query}")
    assert page.status == 200 and "cleo" in page.text
    assert "form-action 'self' http://127.0.0.1:43123" in page.headers["Content-Security-Policy"]
    form = {"cliSessionPort": "43123", "cliSessionNonce": nonce, "cliSessionDescription": "x"}
    assert (await member.post("/cli-login", form, csrf=False)).status == 400
    done = await member.post("/cli-login", form)
    assert done.status == 303
    location = done.headers["Location"]
    assert location.startswith("http://127.0.0.1:43123/?accessToken=pul-")
    assert location.endswith(f"&nonce={nonce}")
    token = location.split("accessToken=")[1].split("&")[0]
    user = await body_json(await api.as_token(token).call("GET", "/api/user"))
    assert user["githubLogin"] == "cleo"
    assert "pulumi login" in (await member.get("/account/tokens")).text
    assert (await member.get("/welcome/cli")).status == 200
    for bad in ("cliSessionPort=0", "cliSessionPort=x", "cliSessionPort=1&cliSessionNonce=%3C"):
        assert (await member.get(f"/cli-login?{bad}")).status == 400, bad
