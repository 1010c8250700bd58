"""procella.api.body: bounded gunzip, strict JSON, and members with their exact bytes."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator

import pytest
from zlib_ng import zlib_ng

from procella.api.body import (
    MAX_GZIP_MEMBERS,
    checkpoint_members,
    field,
    gunzip,
    parse_json,
    parse_object_members,
    require_object,
)
from procella.errors import BadRequest, PayloadTooLarge
from procella.strictjson import MAX_DEPTH, depth

# gunzip -------------------------------------------------------------------------------


def test_gunzip_one_member() -> None:
    assert gunzip(gzip.compress(b"hello"), 100) == b"hello"


def test_gunzip_multi_member() -> None:
    data = gzip.compress(b"hello ") + gzip.compress(b"") + gzip.compress(b"world")
    assert gunzip(data, 100) == b"hello world"


def test_gunzip_empty_input() -> None:
    assert gunzip(b"", 10) == b""
    assert gunzip(gzip.compress(b""), 10) == b""


def test_gunzip_limit_is_inclusive() -> None:
    data = gzip.compress(b"x" * 1000)
    assert gunzip(data, 1000) == b"x" * 1000
    with pytest.raises(PayloadTooLarge):
        gunzip(data, 999)


def test_gunzip_limit_spans_members() -> None:
    data = gzip.compress(b"x" * 600) * 2
    assert len(gunzip(data, 1200)) == 1200
    with pytest.raises(PayloadTooLarge):
        gunzip(data, 1199)


def test_gunzip_bomb_stops_early() -> None:
    bomb = gzip.compress(b"\x00" * (100 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < 200 * 1024
    with pytest.raises(PayloadTooLarge):
        gunzip(bomb, 1024 * 1024)


@pytest.fixture
def inflaters(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts the zlib-ng inflaters gunzip creates (each one is real)."""
    created = [0]
    real = zlib_ng.decompressobj

    def counting(*args: object, **kwargs: object) -> object:
        created[0] += 1
        return real(*args, **kwargs)  # type: ignore[arg-type]

    # The module body.py inflates with (one object: patched there too).
    monkeypatch.setattr(zlib_ng, "decompressobj", counting)
    yield created


def test_gunzip_many_empty_members_stop_at_the_cap(inflaters: list[int]) -> None:
    """Each member needs an inflater of its own; 200k empty ones (4 MB) used to cost
    minutes of copying. Past the cap, gunzip stops without looking at the rest."""
    data = gzip.compress(b"", mtime=0) * 200_000
    with pytest.raises(BadRequest, match="members") as info:
        gunzip(data, 1_000_000)
    assert not isinstance(info.value, PayloadTooLarge)
    assert inflaters[0] == MAX_GZIP_MEMBERS


def test_gunzip_members_up_to_the_cap(inflaters: list[int]) -> None:
    data = gzip.compress(b"ab", mtime=0) * MAX_GZIP_MEMBERS
    assert gunzip(data, 1_000_000) == b"ab" * MAX_GZIP_MEMBERS
    assert inflaters[0] == MAX_GZIP_MEMBERS


def test_gunzip_large_members_spanning_feeds() -> None:
    parts = [bytes(range(256)) * 1000, b"", b"x" * 300_000]
    data = b"".join(gzip.compress(p, compresslevel=0) for p in parts)
    assert gunzip(data, 10_000_000) == b"".join(parts)


def test_gunzip_many_small_members_bomb() -> None:
    member = gzip.compress(b"\x00" * 100_000)
    with pytest.raises(PayloadTooLarge):
        gunzip(member * 50, 1_000_000)


# mtime=0: the test ids hold these bytes, and pytest-xdist workers must collect equal ids.
@pytest.mark.parametrize(
    "data",
    [
        b"not gzip",
        gzip.compress(b"hello", mtime=0)[:-3],  # truncated trailer
        gzip.compress(b"hello" * 100, mtime=0)[:15],  # truncated stream
        gzip.compress(b"hello", mtime=0) + b"garbage",
        zlib.compress(b"zlib, not gzip"),
        b"\x1f\x8b",
    ],
)
def test_gunzip_invalid(data: bytes) -> None:
    with pytest.raises(BadRequest) as info:
        gunzip(data, 1_000_000)
    assert not isinstance(info.value, PayloadTooLarge)


def test_gunzip_corrupt_crc() -> None:
    data = bytearray(gzip.compress(b"hello world"))
    data[-8] ^= 0xFF  # the CRC32 of the trailer
    with pytest.raises(BadRequest):
        gunzip(bytes(data), 1000)


def test_payload_too_large_is_a_bad_request_subclass() -> None:
    assert issubclass(PayloadTooLarge, BadRequest)


# parse_json ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (b"{}", {}),
        (b' \n{"a": [1, 2.5, null, true]}\t\r\n', {"a": [1, 2.5, None, True]}),
        (b'"x"', "x"),
        (b"0", 0),
        ('{"k": "caf\u00e9"}'.encode(), {"k": "caf\u00e9"}),
    ],
)
def test_parse_json(raw: bytes, value: object) -> None:
    assert parse_json(raw) == value


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"   ",
        b"{",
        b"{} {}",
        b"{}x",
        b"NaN",
        b"[Infinity]",
        b'{"a": -Infinity}',
        b"\xff",
        b'"\xc3"',
        b"[" * 100_000,
        b'{"a":' * 100_000,
        b"{'a': 1}",
        b'["\x00"]',
    ],
)
def test_parse_json_rejects(raw: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_json(raw)


@pytest.mark.parametrize(
    "raw",
    [b"1e400", b"[-1e400]", b'{"a": 1E+999}', b"[1" + b"0" * 400 + b".5]", b"1" + b"0" * 400],
)
def test_parse_json_rejects_numbers_no_float64_holds(raw: bytes) -> None:
    """Python reads 1e400 as inf (and a 401-digit integer exactly); Go reads neither."""
    with pytest.raises(BadRequest, match="out of range"):
        parse_json(raw)
    with pytest.raises(BadRequest, match="out of range"):
        parse_object_members(b'{"a":' + raw + b"}")


def test_parse_json_keeps_numbers_float64_holds() -> None:
    assert parse_json(b"[1e308, -1e-400, 123456789012345678901234567890]") == [
        1e308,
        -0.0,
        123456789012345678901234567890,
    ]


def nested(levels: int, inner: bytes = b"1") -> bytes:
    """JSON nested ``levels`` deep, alternating arrays and objects."""
    text = inner
    for i in range(levels):
        text = b"[" + text + b"]" if i % 2 else b'{"k":' + text + b"}"
    return text


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"1", 0),
        (b"[]", 1),
        (b'{"a":[1,{"b":[]}],"c":{}}', 4),
        (b'["[[[[", "}}}", "\\\\", "\\"[["]', 1),
        (b'["\\\\\\"[", {"\\\\": [["\\\\"]]}]', 4),
        (b'"[[[', 0),  # an unterminated string: nothing after it counts
        (b"[[[[[[", 6),  # truncated: as deep as a parser gets before it fails
        (b"[[]]]]]][[[", 2),
        (b"[[[[]]]]," * 1000 + b"[[[[[[[[]]]]]]]]", 8),
        (b"[" * 100_000 + b"]" * 100_000, 100_000),
        (b"[[]," * 50_000 + b"]" * 50_000, 50_001),
    ],
)
def test_depth(raw: bytes, expected: int) -> None:
    assert depth(raw) == expected


def test_depth_limit_is_the_same_for_every_parse() -> None:
    at_limit, beyond = nested(MAX_DEPTH), nested(MAX_DEPTH + 1)
    assert depth(at_limit) == MAX_DEPTH
    assert parse_json(at_limit)
    with pytest.raises(BadRequest, match=f"deeper than {MAX_DEPTH}"):
        parse_json(beyond)
    padded = b'{"pad":"' + b"x" * 300_000 + b'","v":' + beyond + b"}"
    with pytest.raises(BadRequest, match=f"deeper than {MAX_DEPTH}"):
        parse_json(padded)


# parse_object_members -------------------------------------------------------------------


def test_members_keep_exact_bytes() -> None:
    raw = (
        b'{ "version" : 3 ,\n "untypedDeployment":{"b": 1,  "a":"\\u003c\\u0026\\/"} ,'
        b'"text":"caf\xc3\xa9 \xf0\x9f\x98\x80 \\u00e9","n":-1.5e3,"z":null}'
    )
    members = parse_object_members(raw)
    assert list(members) == ["version", "untypedDeployment", "text", "n", "z"]
    assert members["version"] == (3, b"3")
    assert members["untypedDeployment"] == (
        {"b": 1, "a": "<&/"},
        b'{"b": 1,  "a":"\\u003c\\u0026\\/"}',
    )
    assert members["text"][0] == "caf\u00e9 \U0001f600 \u00e9"
    assert members["text"][1] == b'"caf\xc3\xa9 \xf0\x9f\x98\x80 \\u00e9"'
    assert members["n"] == (-1500.0, b"-1.5e3")
    assert members["z"] == (None, b"null")
    # Each slice is exactly a substring of the input.
    for _, exact in members.values():
        assert exact in raw


def test_members_depth_limit() -> None:
    assert parse_object_members(b'{"a":' + nested(MAX_DEPTH - 1) + b"}")["a"][1]
    with pytest.raises(BadRequest, match="deeper than"):
        parse_object_members(b'{"a":' + nested(MAX_DEPTH) + b"}")


def test_members_of_empty_object() -> None:
    assert parse_object_members(b"{}") == {}
    assert parse_object_members(b" \n { } \n") == {}


def test_members_escaped_keys_are_decoded() -> None:
    members = parse_object_members(b'{"a\\u0062":1}')
    assert members == {"ab": (1, b"1")}


def test_members_duplicate_key_keeps_the_last() -> None:
    assert parse_object_members(b'{"a":1,"a":2}') == {"a": (2, b"2")}


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"[]",
        b'"x"',
        b"{",
        b'{"a"}',
        b'{"a":}',
        b'{"a":1,}',
        b'{"a":1 "b":2}',
        b'{"a":1}x',
        b'{"a":1}{}',
        b"{a:1}",
        b'{"a":NaN}',
        b'{"a":[Infinity]}',
        b'{"a":"\xff"}',
        b'{"a":' + b"[" * 100_000,
        b'{"a\x01":1}',
    ],
)
def test_members_reject(raw: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_object_members(raw)


def test_members_of_a_compact_go_checkpoint() -> None:
    inner = json.dumps({"version": 3, "deployment": {"x": "<a>"}}, separators=(",", ":"))
    inner = inner.replace("<", "\\u003c").replace(">", "\\u003e")
    raw = ('{"version":3,"untypedDeployment":' + inner + ',"sequenceNumber":7}').encode()
    members = parse_object_members(raw)
    assert members["untypedDeployment"][1] == inner.encode()
    assert members["sequenceNumber"] == (7, b"7")


# field / require_object ---------------------------------------------------------------


def test_field() -> None:
    obj = {"i": 1, "b": True, "s": "x", "n": None, "f": 1.5, "l": []}
    assert field(obj, "i", int) == 1
    assert field(obj, "b", bool) is True
    assert field(obj, "s", str) == "x"
    assert field(obj, "f", (int, float)) == 1.5
    assert field(obj, "l", list) == []
    assert field(obj, "missing", int, required=False) is None
    assert field(obj, "n", int, required=False) is None


@pytest.mark.parametrize(
    ("name", "kind"),
    [("b", int), ("i", str), ("s", int), ("f", int), ("missing", int), ("n", int), ("i", bool)],
)
def test_field_rejects(name: str, kind: type) -> None:
    obj = {"i": 1, "b": True, "s": "x", "n": None, "f": 1.5}
    with pytest.raises(BadRequest):
        field(obj, name, kind)


def test_require_object() -> None:
    assert require_object({"a": 1}) == {"a": 1}
    values: tuple[object, ...] = (None, [], "x", 1)
    for value in values:
        with pytest.raises(BadRequest):
            require_object(value)


# checkpoint_members ---------------------------------------------------------------------


def test_checkpoint_members_reads_the_cli_layouts_without_parsing_the_value() -> None:
    value = b'{"manifest":{},"resources":[{"urn":"a"}]}'
    full = checkpoint_members(
        b'{"isInvalid":false,"version":3,"deployment":' + value + b"}", "deployment"
    )
    assert full is not None
    assert full[0] == {"isInvalid": False, "version": 3, "deployment": None}
    assert bytes(full[1]) == value
    verbatim = checkpoint_members(
        b'{"version":3,"untypedDeployment":' + value + b',"sequenceNumber":12}', "untypedDeployment"
    )
    assert verbatim is not None
    assert verbatim[0] == {"version": 3, "untypedDeployment": None, "sequenceNumber": 12}
    assert bytes(verbatim[1]) == value


@pytest.mark.parametrize(
    "raw",
    [
        b'{"version":3,"deployment":{}} ',  # trailing space: not the CLI's layout
        b'{"version":3, "deployment":{}}',
        b'{"version":3,"deployment":[]}',
        b'{"version":3,"deployment":{},"x":1}',
        b'{"version":NaN,"deployment":{}}',  # the rest of the body must parse strictly
        b'{"a":"\\"deployment\\":{}}',  # the name inside a string
        b'["deployment":{}}',
    ],
)
def test_checkpoint_members_leaves_other_bodies_to_the_whole_parse(raw: bytes) -> None:
    assert checkpoint_members(raw, "deployment") is None
