"""Small response helpers shared by the handlers."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

from quart import Response, request

from procella.errors import BadRequest, NotFound
from procella.stacks.models import StackRef, check_ref


def json_response(value: Any, status: int = 200) -> Response:
    # Never NaN or Infinity: they are not JSON, and Go's decoder refuses them.
    body = json.dumps(value, separators=(",", ":"), allow_nan=False)
    return Response(body, status=status, content_type="application/json")


# A body larger than this goes out a piece at a time. Handed over whole, it is copied
# twice on its way out (h11 joins what it frames, the transport buffers what the socket
# did not take yet): three copies of a 100 MB state at once, for an export.
RESPONSE_PIECE_BYTES = 1 << 20


def raw_json_response(body: bytes) -> Response:
    """``body``, JSON already, with its length (not chunked): the CLI reads it whole."""
    if len(body) <= RESPONSE_PIECE_BYTES:
        return Response(body, status=200, content_type="application/json")
    response = Response(_pieces(body), status=200, content_type="application/json")
    response.content_length = len(body)
    return response


async def _pieces(body: bytes) -> AsyncIterator[bytes]:
    view = memoryview(body)
    for start in range(0, len(body), RESPONSE_PIECE_BYTES):
        yield bytes(view[start : start + RESPONSE_PIECE_BYTES])


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
