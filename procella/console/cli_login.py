"""``pulumi login`` in a browser: the CLI's "hit <ENTER> to log in using your browser".

When the CLI knows the console's URL it can open ``/cli-login?cliSessionPort=<port>&
cliSessionNonce=<nonce>&cliSessionDescription=<text>`` and wait on ``127.0.0.1:<port>``
for a redirect carrying ``accessToken`` and ``nonce`` (``pkg/backend/httpstate/backend.go``,
``loginWithBrowser``); it then sends the browser on to ``/welcome/cli``. Here the logged-in
user confirms (a form with the CSRF token, so no other site can mint tokens through a
user's session), a new token of theirs is made, and the browser is sent to the CLI.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

from quart import Response, redirect, render_template, request
from werkzeug.wrappers.response import Response as Redirect

from procella.api.context import services
from procella.auth.own_tokens import OwnTokens
from procella.console import session
from procella.errors import BadRequest

_NONCE = re.compile(r"[0-9A-Za-z_-]{16,128}")
_MAX_DESCRIPTION = 200


def _session_args(values: dict[str, str]) -> tuple[int, str, str]:
    """The CLI's port, nonce and token description, checked."""
    try:
        port = int(values.get("cliSessionPort") or "")
    except ValueError:
        raise BadRequest("cliSessionPort must be a port number") from None
    if not 1 <= port <= 65535:
        raise BadRequest("cliSessionPort must be a port number")
    nonce = values.get("cliSessionNonce") or ""
    if not _NONCE.fullmatch(nonce):
        raise BadRequest("cliSessionNonce is missing or malformed")
    description = (values.get("cliSessionDescription") or "")[:_MAX_DESCRIPTION]
    return port, nonce, "".join(c for c in description if c.isprintable())


async def confirm_page() -> Response:
    me = await session.principal()
    port, nonce, description = _session_args(request.args.to_dict())
    html = await render_template(
        "cli_login.html", port=port, nonce=nonce, description=description, login=me.login
    )
    response = Response(html, content_type="text/html; charset=utf-8")
    # The form's answer is a redirect to the CLI's listener on this machine.
    response.headers["Content-Security-Policy"] = (
        f"default-src 'self'; frame-ancestors 'none'; form-action 'self' http://127.0.0.1:{port}"
    )
    return response


async def log_cli_in() -> Redirect:
    me = await session.principal()
    form = await request.form
    session.check_csrf(form.get("csrf"))
    port, nonce, description = _session_args(form.to_dict())
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M")
    name = f"pulumi login {stamp} {secrets.token_hex(3)}"
    issued = await OwnTokens(services().auth).create(me, name, None, description)
    target = f"http://127.0.0.1:{port}/?accessToken={issued.token}&nonce={nonce}"
    return redirect(target, code=303)


async def welcome_page() -> str:
    return await render_template("welcome_cli.html")
