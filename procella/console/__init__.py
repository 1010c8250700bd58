"""The web console: server-rendered pages at the paths the Pulumi CLI links to.

``PULUMI_CONSOLE_DOMAIN`` (or an ``api.``/``app.`` host pair) makes the CLI print links such
as ``http://host/acme/web/dev/updates/2``; these pages answer them, on every replica, from
the same services and with the same authorization as the API. The pages only read, except
for a user's own tokens (``/account/tokens``).

The org segment uses a converter that refuses the paths the server keeps for itself
(``/api``, ``/healthz``, ...), so no console route can shadow them, and an unknown
``/api/...`` path still gets the API's JSON 404.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from quart import Blueprint, Quart, Response, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException
from werkzeug.routing import BaseConverter
from werkzeug.wrappers.response import Response as Redirect

from procella import errors, metrics
from procella.api.errors import status_of
from procella.console import account, cli_login, events, pages, session, updates

log = logging.getLogger(__name__)

# First path segments that are never an org: the server's own, and the console's.
RESERVED = (
    "api", "healthz", "readyz", "metrics", "login", "logout", "account", "user", "cli-login",
    "welcome",
)  # fmt: skip


class OrgConverter(BaseConverter):
    """An org name (the CLI's rule: 3-40 characters) that is not a reserved segment."""

    regex = r"(?!(?:" + "|".join(RESERVED) + r")(?:/|$))[a-zA-Z0-9][a-zA-Z0-9_-]{1,38}[a-zA-Z0-9]"


ROUTES: tuple[tuple[str, str, Any], ...] = (
    ("GET", "/", account.home),
    ("GET", "/login", account.login_page),
    ("POST", "/login", account.login),
    ("POST", "/logout", account.logout),
    ("GET", "/account/tokens", account.tokens_page),
    ("GET", "/user/settings/tokens", account.tokens_page),  # the CLI's login prompt links here
    ("POST", "/account/tokens", account.create_token),
    ("POST", "/account/tokens/<token_id>/revoke", account.revoke_token),
    ("GET", "/cli-login", cli_login.confirm_page),  # `pulumi login`, browser flow
    ("POST", "/cli-login", cli_login.log_cli_in),
    ("GET", "/welcome/cli", cli_login.welcome_page),
    ("GET", "/<org:org>", pages.org_page),
    ("GET", "/<org:org>/<project>", pages.project_page),
    ("GET", "/<org:org>/<project>/<stack>", pages.stack_page),
    ("POST", "/<org:org>/<project>/<stack>/outputs/reveal", pages.reveal_output),
    ("GET", "/<org:org>/<project>/<stack>/resources/<path:urn>", pages.resource_page),
    ("GET", "/<org:org>/<project>/<stack>/diff", pages.diff_page),
    ("GET", "/<org:org>/<project>/<stack>/updates/<int:version>", updates.update_page),
    ("GET", "/<org:org>/<project>/<stack>/updates/<int:version>/events", updates.update_events),
    ("GET", "/<org:org>/<project>/<stack>/previews/<update_id>", updates.preview_page),
    ("GET", "/<org:org>/<project>/<stack>/previews/<update_id>/events", updates.preview_events),
    # Anything else under an org is a mistyped console link: an HTML 404, not the API's JSON.
    ("GET", "/<org:org>/<path:rest>", pages.no_such_page),
)


def register(app: Quart) -> None:
    app.url_map.converters["org"] = OrgConverter
    bp = Blueprint(
        "console",
        __name__,
        template_folder="templates",
        static_folder="static",
        static_url_path="/_console/static",
    )
    for method, rule, handler in ROUTES:
        endpoint = (
            f"{handler.__name__}_{method}" if rule != "/user/settings/tokens" else "cli_tokens"
        )
        bp.add_url_rule(rule, endpoint, handler, methods=[method], provide_automatic_options=False)
    bp.register_error_handler(errors.ProcellaError, _domain_error)
    bp.register_error_handler(HTTPException, _http_error)
    bp.register_error_handler(Exception, _unexpected_error)
    bp.context_processor(_page_context)
    bp.after_request(_page_headers)
    bp.add_app_template_filter(_when, "when")
    bp.add_app_template_filter(_changes, "changes")
    app.register_blueprint(bp)


# Pages load only their own CSS and script, cannot be framed (clickjacking on the forms),
# and are never cached: a page may show a revealed secret or a new token.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


async def _page_headers(response: Response) -> Response:
    if request.endpoint == "console.static":
        return response
    for name, value in PAGE_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def _when(epoch_ms: int | None) -> str:
    if epoch_ms is None:
        return ""
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _changes(stored: str | None) -> str:
    """An update's stored resource changes (JSON) as the CLI's symbols: ``+3 ~1 -1``."""
    try:
        found = json.loads(stored or "{}")
    except ValueError:
        return ""
    if not isinstance(found, dict):
        return ""
    return events.changes_text({str(k): v for k, v in found.items() if isinstance(v, int)})


async def _page_context() -> dict[str, Any]:
    return {"csrf_token": session.csrf_token, "me": await account.optional_principal()}


async def _domain_error(exc: errors.ProcellaError) -> Redirect | tuple[str, int]:
    if isinstance(exc, errors.Unauthorized) and request.method == "GET":
        return redirect(url_for("console.login_page_GET", next=request.full_path.rstrip("?")))
    if isinstance(exc, errors.TransientStoreError):
        metrics.TRANSIENT_ERRORS.labels(exc.cause).inc()
    return await error_page(status_of(exc), exc.message)


async def _http_error(exc: HTTPException) -> tuple[str, int]:
    return await error_page(exc.code or 500, exc.description or exc.name)


async def _unexpected_error(exc: Exception) -> tuple[str, int]:
    log.exception("unexpected error")
    return await error_page(500, "internal server error")


async def error_page(status: int, message: str) -> tuple[str, int]:
    return await render_template("error.html", status=status, message=message), status
