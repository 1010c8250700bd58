"""Login, logout, the home page, and the user's own tokens (``/account/tokens``)."""

from __future__ import annotations

from quart import Response, redirect, render_template, request, url_for
from werkzeug.wrappers.response import Response as Redirect

from procella.api.context import services
from procella.auth.models import Principal
from procella.auth.own_tokens import OwnTokens
from procella.console import session
from procella.errors import BadRequest, ProcellaError, Unauthorized

# How long a token made in the console lives, as offered by its form (days; 0: never).
EXPIRY_CHOICES = (0, 1, 7, 30, 90, 365)


async def optional_principal() -> Principal | None:
    """The logged-in user, or None (pages that render for anyone, e.g. errors)."""
    try:
        return await session.principal()
    except ProcellaError:
        return None


def _safe_next(target: str | None) -> str:
    """Only a path on this site: never another host (``//evil``, ``/\\evil``, ``https:``)."""
    if target and target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return url_for("console.home_GET")


async def home() -> Redirect:
    me = await session.principal()
    orgs = me.orgs
    if orgs:
        return redirect(url_for("console.org_page_GET", org=orgs[0]))
    return redirect(url_for("console.tokens_page_GET"))


async def login_page() -> Response | Redirect:
    target = _safe_next(request.args.get("next"))
    if await optional_principal() is not None:
        return redirect(target)
    response = Response("", content_type="text/html; charset=utf-8")
    csrf = session.new_login_csrf(response)
    html = await render_template("login.html", next=target, login_csrf=csrf, error="")
    response.set_data(html)
    return response


async def login() -> Redirect | tuple[str, int]:
    form = await request.form
    session.check_csrf(form.get("csrf"))
    target = _safe_next(form.get("next"))
    token = (form.get("token") or "").strip()
    response = redirect(target)
    try:
        if not token:
            raise Unauthorized("enter an access token")
        await session.start(token, response)
    except Unauthorized as exc:
        csrf = session.csrf_token()
        page = await render_template("login.html", next=target, login_csrf=csrf, error=exc.message)
        return page, 401
    return response


async def logout() -> Redirect:
    form = await request.form
    session.check_csrf(form.get("csrf"))
    response = redirect(url_for("console.login_page_GET"))
    session.end(response)
    return response


async def tokens_page() -> str:
    me = await session.principal()
    rows = await OwnTokens(services().auth).list(me)
    return await render_template(
        "tokens.html", tokens=rows, new_token=None, expiry_choices=EXPIRY_CHOICES
    )


async def create_token() -> str | tuple[str, int]:
    me = await session.principal()
    form = await request.form
    session.check_csrf(form.get("csrf"))
    try:
        days = int(form.get("expires_days") or "0")
    except ValueError:
        raise BadRequest("expires_days must be a whole number of days") from None
    if days not in EXPIRY_CHOICES:
        raise BadRequest(f"expires_days must be one of {', '.join(map(str, EXPIRY_CHOICES))}")
    own = OwnTokens(services().auth)
    issued = await own.create(me, form.get("name") or "", None if days == 0 else days * 86400.0)
    rows = await own.list(me)
    page = await render_template(
        "tokens.html", tokens=rows, new_token=issued.token, expiry_choices=EXPIRY_CHOICES
    )
    return page, 201


async def revoke_token(token_id: str) -> Redirect:
    me = await session.principal()
    form = await request.form
    session.check_csrf(form.get("csrf"))
    await OwnTokens(services().auth).revoke(me, token_id)
    return redirect(url_for("console.tokens_page_GET"))
