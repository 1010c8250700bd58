"""Small response helpers shared by the handlers."""

from __future__ import annotations

import json
import re
from typing import Any

from quart import Response, request

from procella.errors import BadRequest, NotFound
from procella.stacks.models import StackRef, check_ref


def json_response(value: Any, status: int = 200) -> Response:
    # Never NaN or Infinity: they are not JSON, and Go's decoder refuses them.
    body = json.dumps(value, separators=(",", ":"), allow_nan=False)
    return Response(body, status=status, content_type="application/json")


def raw_json_response(body: bytes) -> Response:
    return Response(body, status=200, content_type="application/json")


def no_content() -> Response:
    return Response(b"", status=204)


def stack_ref(org: str, project: str, stack: str) -> StackRef:
    """The stack a URL names, checked against the CLI's naming rules."""
    return check_ref(StackRef(org, project, stack))


_UPDATE_ID = re.compile(r"[0-9a-f]{32}")


def check_update_id(update_id: str) -> str:
    """Update ids are ours (uuid4 hex): anything else names no update."""
    if not _UPDATE_ID.fullmatch(update_id):
        raise NotFound(f"update '{update_id}' not found")
    return update_id


def int_arg(name: str, default: int, *, minimum: int = 0, maximum: int = 2**63 - 1) -> int:
    """An integer query parameter within bounds, or ``default`` when absent."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"query parameter {name!r} must be an integer") from None
    if not minimum <= value <= maximum:
        raise BadRequest(f"query parameter {name!r} must be between {minimum} and {maximum}")
    return value
