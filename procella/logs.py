"""Logging: the request context every line carries, and the one configuration of a process.

While a request is served, ``RequestContext`` (a context variable) holds its request id
and what the server learned about it (route, caller, stack, update); ``RequestIdFilter``
copies the id onto every log record written meanwhile, from any logger or thread that
inherits the context. ``create_app()`` never configures logging: a host that mounts it
keeps its own, and may add ``RequestIdFilter`` (and ``JsonFormatter``) to its handlers.
``procella serve`` calls ``configure`` once.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
FORMATS = ("text", "json")
NO_REQUEST = "-"

# Loggers that write a line per request or per connection checkout at INFO (psycopg_pool's
# "connection given by", aiosqlite, botocore), or duplicate our access line (hypercorn's).
QUIET_LOGGERS = (
    "psycopg",
    "psycopg.pool",
    "aiosqlite",
    "botocore",
    "aiobotocore",
    "boto3",
    "urllib3",
    "hypercorn.access",
)


@dataclass
class RequestContext:
    """One request being served: its id, and fields for its access line."""

    request_id: str
    client_addr: str = ""  # the caller's address (see ``observe.client_address``)
    fields: dict[str, str] = field(default_factory=dict)


_CURRENT: ContextVar[RequestContext | None] = ContextVar("procella_request", default=None)


def current() -> RequestContext | None:
    return _CURRENT.get()


def bind(context: RequestContext) -> Token[RequestContext | None]:
    return _CURRENT.set(context)


def unbind(token: Token[RequestContext | None]) -> None:
    _CURRENT.reset(token)


def note(**fields: str | None) -> None:
    """Add fields to the current request's access line (no-op outside a request)."""
    context = _CURRENT.get()
    if context is not None:
        context.fields.update({k: v for k, v in fields.items() if v})


class RequestIdFilter(logging.Filter):
    """Sets ``record.request_id`` to the id of the request being served, or ``-``."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _CURRENT.get()
        record.request_id = context.request_id if context is not None else NO_REQUEST
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, and the
    structured ``fields`` a record carries (``extra={"fields": {...}}``)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _iso_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id is None:  # a host's handler without our filter
            context = _CURRENT.get()
            request_id = context.request_id if context is not None else None
        if request_id and request_id != NO_REQUEST:
            line["request_id"] = request_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update({k: v for k, v in fields.items() if k not in line})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def _iso_time(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


def configure(level: str, fmt: str = "text") -> None:
    """Send every log line to stderr in ``fmt`` at ``level``: for the process ``procella
    serve`` (or another command) owns. Calling it again replaces what it installed."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RequestIdFilter())
    handler._procella = True  # type: ignore[attr-defined]
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_procella", False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
