"""Every error leaves as ``{"code": <status>, "message": ...}`` with the matching status.

The CLI reads ``code`` from the body, not the status line (pulumi httpstate client
``decodeError``), so a body without it breaks 404 and 409 handling in the CLI.
"""

from __future__ import annotations

import json
import logging

from quart import Quart, Response
from werkzeug.exceptions import HTTPException

from procella import errors, metrics

log = logging.getLogger(__name__)

# Most specific first: the first matching class decides the status.
STATUS: tuple[tuple[type[errors.ProcellaError], int], ...] = (
    (errors.PayloadTooLarge, 413),
    (errors.StackNotEmpty, 400),
    (errors.BadRequest, 400),
    (errors.Unauthorized, 401),
    (errors.Forbidden, 403),
    (errors.NotFound, 404),
    (errors.Conflict, 409),
    (errors.TransientStoreError, 503),
    (errors.ConfigurationError, 500),
)

RETRY_AFTER_SECONDS = 1


def error_response(status: int, message: str) -> Response:
    body = json.dumps({"code": status, "message": message}, allow_nan=False)
    response = Response(body, status=status, content_type="application/json")
    if status == 503:
        # The CLI retries 5xx; Retry-After tells other clients and proxies the same.
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def status_of(exc: errors.ProcellaError) -> int:
    for cls, status in STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def register(app: Quart) -> None:
    @app.errorhandler(errors.ProcellaError)
    async def domain_error(exc: errors.ProcellaError) -> Response:
        status = status_of(exc)
        if isinstance(exc, errors.TransientStoreError):
            metrics.TRANSIENT_ERRORS.labels(exc.cause).inc()
        if status >= 500:
            log.warning("request failed: %s", exc.message)
        return error_response(status, exc.message)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        return error_response(status, exc.description or exc.name)

    @app.errorhandler(Exception)
    async def unexpected_error(exc: Exception) -> Response:
        log.exception("unexpected error")
        return error_response(500, "internal server error")
