"""The log formats and the request context, without a server."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator

import pytest

from procella import logs


def record(message: str, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("procella.test", logging.WARNING, __file__, 1, message, (), None)
    made.__dict__.update(extra)
    return made


def test_outside_a_request_the_id_is_a_dash() -> None:
    line = record("hello")
    logs.RequestIdFilter().filter(line)
    assert line.request_id == "-"  # type: ignore[attr-defined]
    assert "request_id" not in json.loads(logs.JsonFormatter().format(line))


def test_inside_a_request_every_record_gets_its_id() -> None:
    token = logs.bind(logs.RequestContext("abc-1"))
    try:
        line = record("hello")
        logs.RequestIdFilter().filter(line)
        logs.note(route="/x", org=None)  # None and empty values are left out
        context = logs.current()
        assert context is not None and context.fields == {"route": "/x"}
    finally:
        logs.unbind(token)
    assert json.loads(logs.JsonFormatter().format(line))["request_id"] == "abc-1"
    assert logs.current() is None


def test_json_lines_keep_their_core_keys_and_carry_exceptions() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        line = record("failed", exc_info=sys.exc_info(), fields={"message": "x", "status": 500})
    out = json.loads(logs.JsonFormatter().format(line))
    assert out["message"] == "failed" and out["status"] == 500 and out["level"] == "WARNING"
    assert "ValueError: boom" in out["exception"]


@pytest.fixture
def root_restored() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    quiet = {name: logging.getLogger(name).level for name in logs.QUIET_LOGGERS}
    try:
        yield root
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, old in quiet.items():
            logging.getLogger(name).setLevel(old)


def test_configure_replaces_its_own_handler_and_quietens_libraries(
    root_restored: logging.Logger,
) -> None:
    logs.configure("DEBUG", "json")
    logs.configure("INFO", "text")
    ours = [h for h in root_restored.handlers if getattr(h, "_procella", False)]
    assert len(ours) == 1 and root_restored.level == logging.INFO
    assert logging.getLogger("psycopg.pool").level == logging.WARNING
    assert logging.getLogger("hypercorn.access").level == logging.WARNING
