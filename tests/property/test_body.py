"""procella.api.body: gzip bodies, limits, member caps and strict JSON, for any input.

What every parser here promises: valid input comes back exactly (values, and for
checkpoint members the exact bytes), anything else is a ``BadRequest`` (413 for sizes),
never another exception, which the app would answer with a 500.
"""

from __future__ import annotations

import gzip
import json
import math
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from quart import Quart

from procella.api.body import (
    INT64,
    MAX_GZIP_MEMBERS,
    field,
    gunzip,
    parse_json,
    parse_object_members,
    read_body,
    read_json,
    require_object,
)
from procella.errors import BadRequest, PayloadTooLarge
from procella.strictjson import MAX_DEPTH
from tests.property.strategies import (
    any_json,
    json_bytes,
    json_texts,
    json_value_bytes,
    plain_text,
    reference_depth,
)


def _reference(data: bytes) -> Any:
    """What standard JSON says ``data`` is: the stdlib parser, minus what Go refuses."""

    def refuse(name: str) -> Any:
        raise ValueError(name)

    def float64_int(text: str) -> int:
        if math.isinf(float(text)):  # Go reads JSON numbers as float64
            raise ValueError(text)
        return int(text)

    value = json.loads(data.decode("utf-8"), parse_constant=refuse, parse_int=float64_int)
    if reference_depth(value) > MAX_DEPTH:
        raise ValueError("too deep")
    json.dumps(value, allow_nan=False)  # 1e400 read as inf
    return value


# gunzip -----------------------------------------------------------------------------


# Few members, or about as many as the cap allows.
members = st.lists(st.binary(max_size=300), min_size=1, max_size=6) | st.lists(
    st.binary(max_size=4), min_size=MAX_GZIP_MEMBERS - 2, max_size=MAX_GZIP_MEMBERS + 2
)


@given(members, st.integers(0, 2000), st.integers(0, 9))
def test_gunzip_inflates_every_member_within_the_limits(
    parts: list[bytes], limit: int, level: int
) -> None:
    data = b"".join(gzip.compress(p, compresslevel=level) for p in parts)
    whole = b"".join(parts)
    if len(parts) <= MAX_GZIP_MEMBERS and len(whole) <= limit:
        assert gunzip(data, limit) == whole
    elif len(parts) <= MAX_GZIP_MEMBERS:
        with pytest.raises(PayloadTooLarge):
            gunzip(data, limit)
    else:
        with pytest.raises(BadRequest):
            gunzip(data, limit)


@given(st.lists(st.binary(max_size=200), min_size=1, max_size=4), st.data())
def test_a_cut_gzip_body_is_refused_unless_cut_between_members(
    parts: list[bytes], data: st.DataObject
) -> None:
    compressed = [gzip.compress(p) for p in parts]
    body = b"".join(compressed)
    cut = data.draw(st.integers(1, len(body) - 1))
    boundaries, at = {}, 0
    for i, member in enumerate(compressed):
        at += len(member)
        boundaries[at] = i + 1
    if cut in boundaries:
        assert gunzip(body[:cut], 10_000) == b"".join(parts[: boundaries[cut]])
    else:
        with pytest.raises(BadRequest):
            gunzip(body[:cut], 10_000)


@given(st.binary(max_size=200), st.binary(min_size=1, max_size=20))
def test_trailing_bytes_that_are_no_gzip_member_are_refused(payload: bytes, tail: bytes) -> None:
    assume(not tail.startswith(b"\x1f\x8b"))
    with pytest.raises(BadRequest):
        gunzip(gzip.compress(payload) + tail, 10_000)


@given(st.binary(max_size=300), st.data())
def test_corrupted_gzip_is_a_bad_request_or_bounded_output(
    payload: bytes, data: st.DataObject
) -> None:
    body = bytearray(gzip.compress(payload))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(body) - 1))
        body[at] = data.draw(st.integers(0, 255))
    limit = data.draw(st.integers(0, 400))
    try:
        out = gunzip(bytes(body), limit)
    except BadRequest:
        return
    assert len(out) <= limit


@given(st.binary(max_size=200), st.integers(0, 500))
def test_gunzip_of_any_bytes_is_bytes_or_a_bad_request(data: bytes, limit: int) -> None:
    try:
        out = gunzip(data, limit)
    except BadRequest:
        return
    assert isinstance(out, bytes) and len(out) <= limit


# parse_json -------------------------------------------------------------------------


@given(any_json.flatmap(lambda v: st.tuples(st.just(v), json_texts(v))))
def test_parse_json_reads_valid_json_exactly(case: tuple[Any, bytes]) -> None:
    value, text = case
    if reference_depth(value) > MAX_DEPTH:
        return
    assert parse_json(text) == value


@given(json_bytes)
def test_parse_json_agrees_with_standard_json_on_any_bytes(data: bytes) -> None:
    try:
        expected = _reference(data)
    except (ValueError, RecursionError):
        with pytest.raises(BadRequest):
            parse_json(data)
        return
    assume(data.strip())  # an empty body is refused on purpose
    assert parse_json(data) == expected


@given(st.integers(MAX_DEPTH - 3, MAX_DEPTH + 3), st.lists(st.booleans(), min_size=1), plain_text)
def test_the_depth_limit_is_exact(levels: int, objects: list[bool], leaf: str) -> None:
    value: Any = leaf
    for i in range(levels):
        value = {"k": value} if objects[i % len(objects)] else [value]
    text = json.dumps(value).encode()
    for parse in (parse_json, lambda t: parse_object_members(b'{"a":' + t + b"}")):
        limit = MAX_DEPTH if parse is parse_json else MAX_DEPTH - 1
        if levels <= limit:
            parse(text)
        else:
            with pytest.raises(BadRequest):
                parse(text)


# parse_object_members -----------------------------------------------------------------


@st.composite
def object_texts(draw: st.DrawFn) -> tuple[bytes, dict[str, tuple[Any, bytes]]]:
    """An object written member by member, each value in its own style, names maybe
    repeated; and what parsing it must give (the last of a repeated name wins)."""
    pairs = draw(st.lists(st.tuples(plain_text, any_json), max_size=6))
    ws = st.text(" \t\r\n", max_size=2)
    parts, expected = [], {}
    for name, value in pairs:
        raw = draw(json_texts(value)).strip()
        key = json.dumps(name, ensure_ascii=draw(st.booleans())).encode()
        parts.append(draw(ws).encode() + key + draw(ws).encode() + b":" + draw(ws).encode() + raw)
        expected[name] = (value, raw)
    text = draw(ws).encode() + b"{" + b",".join(parts) + draw(ws).encode() + b"}"
    return text + draw(ws).encode(), expected


@given(object_texts())
def test_members_keep_their_values_and_exact_bytes(case: tuple[bytes, dict[str, Any]]) -> None:
    text, expected = case
    assume(all(reference_depth(v) < MAX_DEPTH for v, _ in expected.values()))
    assert parse_object_members(text) == expected


@given(json_bytes)
def test_members_agree_with_parse_json_on_any_bytes(data: bytes) -> None:
    try:
        whole = parse_json(data)
    except BadRequest:
        whole = None
    if not isinstance(whole, dict):
        with pytest.raises(BadRequest):
            parse_object_members(data)
        return
    members = parse_object_members(data)
    assert {k: v for k, (v, _) in members.items()} == whole
    for key, (value, raw) in members.items():
        assert raw in data and parse_json(raw) == value, key


# field and require_object -------------------------------------------------------------

KINDS: list[type | tuple[type, ...]] = [str, int, bool, dict, list, float, (int, float)]


@given(st.dictionaries(st.sampled_from("abc"), any_json), st.sampled_from(KINDS), st.booleans())
def test_field_returns_a_value_of_the_kind_or_refuses(
    obj: dict[str, Any], kind: type | tuple[type, ...], required: bool
) -> None:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    try:
        value = field(obj, "a", kind, required=required)
    except BadRequest:
        present = obj.get("a")
        ok = (
            present is not None
            and isinstance(present, kinds)
            and (bool in kinds or not isinstance(present, bool))
            and not (isinstance(present, int) and not -INT64 <= present < INT64)
        )
        assert not ok and (required or present is not None)
        return
    if value is None:
        assert obj.get("a") is None and not required
        return
    assert value is obj["a"] and isinstance(value, kinds)
    assert bool in kinds or not isinstance(value, bool)
    if isinstance(value, int):
        assert -INT64 <= value < INT64


@given(any_json)
def test_require_object(value: Any) -> None:
    if isinstance(value, dict):
        assert require_object(value) is value
    else:
        with pytest.raises(BadRequest):
            require_object(value)


# read_body and read_json: the Content-Encoding header --------------------------------

_app = Quart(__name__)
ENCODINGS = ["", "identity", "gzip", "x-gzip", " GZip ", "br", "deflate", "gzip, br"]


@given(json_value_bytes, st.sampled_from(ENCODINGS), st.booleans(), st.integers(0, 300))
async def test_read_body_decodes_what_the_header_says(
    payload: bytes, encoding: str, zipped: bool, limit: int
) -> None:
    data = gzip.compress(payload) if zipped else payload
    headers = {"Content-Encoding": encoding} if encoding else {}
    async with _app.test_request_context("/", method="POST", data=data, headers=headers):
        try:
            out = await read_body(limit)
        except BadRequest as exc:
            name = encoding.strip().lower()
            assert name not in ("", "identity")
            if name in ("gzip", "x-gzip") and zipped:
                assert isinstance(exc, PayloadTooLarge) and len(payload) > limit
            return
    name = encoding.strip().lower()
    if name in ("", "identity"):
        assert out == data
    else:
        assert name in ("gzip", "x-gzip") and zipped and out == payload


@given(st.text(" \t\r\n", max_size=3) | json_bytes.map(lambda b: b.decode("latin-1")))
async def test_read_json_gives_the_empty_value_for_a_blank_body(text: str) -> None:
    data = text.encode("latin-1")
    async with _app.test_request_context("/", method="POST", data=data):
        try:
            value = await read_json(10_000, empty={"empty": True})
        except BadRequest:
            assert data.strip()
            return
    if not data.strip():
        assert value == {"empty": True}
    else:
        assert value == _reference(data)
