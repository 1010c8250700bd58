"""Request bodies: size limits, gzip, and JSON that keeps the bytes it came from.

The CLI gzips checkpoint, import, event and batch-secret bodies. Decompression is
bounded and linear (a small gzip bomb must not become gigabytes, nor many tiny members
minutes of CPU), and JSON parsing is strict: valid UTF-8, no NaN/Infinity, no number a
float64 cannot hold (Python reads 1e400 as inf, which would be stored as ``Infinity``),
and no nesting deeper than ``nesting.MAX_DEPTH``, checked before any parser recurses.
"""

from __future__ import annotations

import asyncio
import re
from json.decoder import scanstring  # type: ignore[attr-defined]
from typing import Any, cast

from quart import Response, after_this_request, request
from werkzeug.wrappers import Response as WerkzeugResponse
from zlib_ng import zlib_ng

from procella import memory
from procella.errors import BadRequest, PayloadTooLarge
from procella.strictjson import DECODER as _DECODER
from procella.strictjson import MAX_DEPTH, depth

# Integers in requests must fit the database's 64-bit columns.
INT64 = 2**63
# Above this size, decompression and parsing move to a thread so the event loop stays free.
OFFLOAD_BYTES = 256 * 1024
# The CLI sends one gzip member; concatenated ones are valid gzip, but each needs an
# inflater of its own, so a body of many empty members is refused rather than inflated.
MAX_GZIP_MEMBERS = 64
# Compressed input goes to an inflater this much at a time, so what it leaves over at the
# end of a member (copied, as ``unused_data``) stays small however large the body.
_FEED_BYTES = 64 * 1024
# zlib-ng's type stub declares ``error`` as an instance; it is the exception class.
_INFLATE_ERROR = cast(type[Exception], zlib_ng.error)
_WS = re.compile(r"[ \t\n\r]*")


def gunzip(data: bytes, limit: int) -> bytes:
    """Inflate (possibly multi-member) gzip data, refusing to produce more than ``limit``.

    zlib-ng, and the output kept in pieces joined once: for a 20 MB checkpoint that is
    several times faster than zlib growing one buffer (about 10 against 20-60 ms here).
    """
    out: list[bytes] = []
    view = memoryview(data)
    start = members = 0
    while start < len(data):
        members += 1
        if members > MAX_GZIP_MEMBERS:
            raise BadRequest(f"invalid gzip body: more than {MAX_GZIP_MEMBERS} members")
        start = _inflate_member(view, start, out, limit)
    return b"".join(out)


def _inflate_member(view: memoryview, start: int, out: list[bytes], limit: int) -> int:
    """Inflate the member at ``view[start:]`` onto ``out``; return where the next begins."""
    inflater = zlib_ng.decompressobj(wbits=31)
    fed = start
    size = sum(len(piece) for piece in out)
    try:
        while not inflater.eof:
            chunk = view[fed : fed + _FEED_BYTES]
            if not chunk:
                raise BadRequest("invalid gzip body: truncated")
            fed += len(chunk)
            # With room for one byte more than allowed, a short answer means all of the
            # chunk was consumed; a full one means the body is too large.
            piece = inflater.decompress(chunk, limit + 1 - size)
            size += len(piece)
            out.append(piece)
            if size > limit:
                raise PayloadTooLarge(f"decompressed body is larger than {limit} bytes")
    except _INFLATE_ERROR as exc:
        raise BadRequest(f"invalid gzip body: {exc}") from None
    return fed - len(inflater.unused_data)


async def read_body(max_inflated: int) -> bytes:
    """The request body, gunzipped when ``Content-Encoding: gzip``."""
    data = await request.get_data(cache=False, as_text=False, parse_form_data=False)
    assert isinstance(data, bytes)
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in ("", "identity", "gzip", "x-gzip"):
        raise BadRequest(f"unsupported Content-Encoding {encoding!r}")
    if encoding in ("", "identity"):
        pass
    elif len(data) > OFFLOAD_BYTES:
        data = await asyncio.to_thread(gunzip, data, max_inflated)
    else:
        data = gunzip(data, max_inflated)
    if len(data) >= memory.LARGE_BYTES:
        trim_when_done()
    return data


def trim_when_done() -> None:
    """After this request, hand freed memory back to the system (``procella.memory``): for
    requests that read, build or replay a large state."""
    after_this_request(_trim)


async def _trim(response: Response | WerkzeugResponse) -> Response | WerkzeugResponse:
    """Once the request is done, its large body and what came of it are freed: hand the
    memory back (``procella.memory``)."""
    memory.trim()
    return response


def _decode_text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"request body is not UTF-8: {exc}") from None


def parse_json(data: bytes) -> Any:
    text = _decode_text(data)
    if not text.strip():
        raise BadRequest("request body is empty; expected JSON")
    _check_depth(data)
    try:
        value, end = _DECODER.raw_decode(text, _WS.match(text, 0).end())  # type: ignore[union-attr]
    except RecursionError:
        raise BadRequest("request body is nested too deeply") from None
    except ValueError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if _WS.match(text, end).end() != len(text):  # type: ignore[union-attr]
        raise BadRequest("request body has data after the JSON value")
    return value


def parse_object_members(data: bytes) -> dict[str, tuple[Any, bytes]]:
    """Parse a JSON object; map each member to ``(value, exact bytes of its value)``.

    The exact bytes let a checkpoint be stored as the CLI wrote it, which delta
    checkpoints depend on: their offsets and hash are over that text.
    """
    text = _decode_text(data)
    _check_depth(data)
    try:
        # In ASCII text (the CLI's, nearly always) a character offset is a byte offset, so
        # a member's bytes are sliced from the body instead of encoded again.
        return _members(text, data if data.isascii() else None)
    except RecursionError:
        raise BadRequest("request body is nested too deeply") from None
    except (ValueError, IndexError) as exc:
        raise BadRequest(f"request body is not a valid JSON object: {exc}") from None


def checkpoint_members(data: bytes, key: str) -> tuple[dict[str, Any], memoryview] | None:
    """A checkpoint body's members without parsing its large one, when the body is laid
    out as the CLI writes it: ``key``'s object value last, or followed only by the
    sequence number. Returns the other members' values (``key`` maps to None) and a view
    of the exact bytes of ``key``'s value, which the caller must validate; None for any
    other layout (then the body is parsed whole).

    The rest of the body is parsed strictly with ``"1"`` in place of the value: that it
    parses proves the value's place is a member's value (the argument of
    ``procella.state.pieces``), so the body is valid if the value is, and means what the
    whole parse would.
    """
    name = b'"' + key.encode() + b'":'
    at = data.find(name)
    if at < 1 or data[at - 1] not in b"{,":
        return None
    tail = _CHECKPOINT_TAIL.search(data, max(len(data) - 64, 0))
    start = at + len(name)
    if tail is None or not start < tail.start() or data[start] != ord("{"):
        return None
    end = tail.start() + 1
    envelope = data[:start] + b'"1"' + data[end:]
    try:
        value = parse_json(envelope)
    except BadRequest:
        return None
    if not isinstance(value, dict) or value.get(key) != "1":
        return None
    value[key] = None
    return value, memoryview(data)[start:end]


# How the CLI's checkpoint bodies end: the large value's closing brace, then the body's
# (``checkpoint``), or the sequence number and the body's (``checkpointverbatim``).
_CHECKPOINT_TAIL = re.compile(rb'\}(?:\}|,"sequenceNumber":-?[0-9]{1,20}\})\Z')


def _check_depth(data: bytes) -> None:
    if depth(data) > MAX_DEPTH:
        raise BadRequest(f"request body nests deeper than {MAX_DEPTH} levels")


def _members(text: str, ascii_data: bytes | None) -> dict[str, tuple[Any, bytes]]:
    members: dict[str, tuple[Any, bytes]] = {}
    i = _skip(text, 0)
    if text[i] != "{":
        raise ValueError("expected an object")
    i = _skip(text, i + 1)
    if text[i] == "}":
        i += 1
    else:
        while True:
            if text[i] != '"':
                raise ValueError(f"expected a member name at {i}")
            key, i = scanstring(text, i + 1, True)
            i = _skip(text, i)
            if text[i] != ":":
                raise ValueError(f"expected ':' at {i}")
            start = _skip(text, i + 1)
            value, end = _DECODER.raw_decode(text, start)
            raw = text[start:end].encode() if ascii_data is None else ascii_data[start:end]
            members[key] = (value, raw)
            i = _skip(text, end)
            if text[i] == ",":
                i = _skip(text, i + 1)
                continue
            if text[i] != "}":
                raise ValueError(f"expected ',' or '}}' at {i}")
            i += 1
            break
    if _skip(text, i) != len(text):
        raise ValueError("data after the JSON object")
    return members


def _skip(text: str, i: int) -> int:
    return _WS.match(text, i).end()  # type: ignore[union-attr]


_REQUIRED = object()


async def read_json(max_inflated: int, *, empty: Any = _REQUIRED) -> Any:
    """The body as JSON; an empty body is ``empty`` when given, else an error."""
    data = await read_body(max_inflated)
    if empty is not _REQUIRED and not data.strip():
        return empty
    return await parse_json_offloaded(data)


async def parse_json_offloaded(data: bytes) -> Any:
    """``parse_json``, in a thread when the body is large."""
    if len(data) > OFFLOAD_BYTES:
        return await asyncio.to_thread(parse_json, data)
    return parse_json(data)


async def read_json_members(max_inflated: int) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The body as a JSON object: ``(values, raw)``, raw holding each member's exact bytes."""
    data = await read_body(max_inflated)
    if len(data) > OFFLOAD_BYTES:
        members = await asyncio.to_thread(parse_object_members, data)
    else:
        members = parse_object_members(data)
    values = {key: value for key, (value, _) in members.items()}
    raw = {key: text for key, (_, text) in members.items()}
    return values, raw


def require_object(value: Any, what: str = "request body") -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be a JSON object")
    return value


def field(
    obj: dict[str, Any], name: str, kind: type | tuple[type, ...], *, required: bool = True
) -> Any:
    """``obj[name]`` checked against ``kind`` (bool is never an int here)."""
    if name not in obj or obj[name] is None:
        if required:
            raise BadRequest(f"missing field {name!r}")
        return None
    value = obj[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise BadRequest(f"field {name!r} has the wrong type")
    if not isinstance(value, kinds):
        raise BadRequest(f"field {name!r} has the wrong type")
    if isinstance(value, int) and not isinstance(value, bool) and not -INT64 <= value < INT64:
        raise BadRequest(f"field {name!r} is out of range")
    return value
