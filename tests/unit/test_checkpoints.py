"""procella.state.checkpoints: text edits, the deployment wrapper, schema checks."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from procella.errors import BadRequest
from procella.state import deltas
from procella.state.checkpoints import (
    EMPTY_DEPLOYMENT,
    KNOWN_FEATURES,
    TextEdit,
    apply_text_edits,
    check_schema,
    check_untyped_deployment,
    count_resources,
    parse_state,
    parse_text_edits,
    sha256_hex,
    state_of,
    wrap_deployment,
)


def edit(start: int, end: int, text: str | bytes) -> TextEdit:
    return TextEdit(start, end, text.encode() if isinstance(text, str) else text)


PREV = b"0123456789"


@pytest.mark.parametrize(
    ("edits", "expected"),
    [
        ([], PREV),
        ([edit(0, 0, "ab")], b"ab0123456789"),
        ([edit(10, 10, "ab")], b"0123456789ab"),
        ([edit(0, 10, "")], b""),
        ([edit(0, 10, "x")], b"x"),
        ([edit(3, 5, "XYZ")], b"012XYZ56789"),
        ([edit(3, 3, "")], PREV),
        ([edit(2, 4, "a"), edit(4, 6, "b")], b"01ab6789"),  # adjacent spans
        ([edit(8, 9, "z"), edit(1, 2, "y")], b"0y234567z9"),  # any order
        ([edit(5, 5, "a"), edit(5, 5, "b")], b"01234ab56789"),  # two inserts at one offset
        ([edit(0, 1, "\u00e9")], "\u00e9123456789".encode()),
    ],
)
def test_apply_text_edits(edits: list[TextEdit], expected: bytes) -> None:
    assert apply_text_edits(PREV, edits) == expected
    # The same edits stored as a step rebuild the same text (two inserts at one offset
    # once came back in reverse order: tests/property/test_deltas.py).
    assert deltas.apply_chain(PREV, [edits]) == expected
    assert deltas.apply_chain(PREV, [deltas.decode(deltas.encode(edits))]) == expected


def test_apply_text_edits_uses_byte_offsets() -> None:
    prev = "caf\u00e9-\U0001f600-end".encode()
    at = prev.index(b"-end")
    assert at == 10  # "café" is 5 bytes, "-" 1, the emoji 4: 7 characters, 10 bytes
    assert apply_text_edits(prev, [edit(at, at + 4, "!")]) == "caf\u00e9-\U0001f600!".encode()


def test_apply_text_edits_to_empty_text() -> None:
    assert apply_text_edits(b"", [edit(0, 0, "new")]) == b"new"
    with pytest.raises(BadRequest):
        apply_text_edits(b"", [edit(0, 1, "")])


@pytest.mark.parametrize(
    "edits",
    [
        [edit(-1, 2, "x")],
        [edit(5, 4, "x")],
        [edit(0, 11, "x")],
        [edit(11, 11, "x")],
        [edit(0, 5, "a"), edit(4, 6, "b")],  # overlap
        [edit(2, 8, "a"), edit(3, 4, "b")],  # contained
        [edit(3, 6, "a"), edit(3, 6, "b")],  # same span twice
    ],
)
def test_apply_text_edits_rejects_bad_spans(edits: list[TextEdit]) -> None:
    with pytest.raises(BadRequest):
        apply_text_edits(PREV, edits)


def span(start: object, end: object, text: object = "x") -> dict[str, Any]:
    return {
        "Span": {
            "uri": "",
            "start": {"line": 1, "column": 1, "offset": start},
            "end": {"line": 1, "column": 1, "offset": end},
        },
        "NewText": text,
    }


def test_parse_text_edits() -> None:
    assert parse_text_edits([]) == []
    assert parse_text_edits([span(1, 3, "\u00e9"), span(5, 5, "")]) == [
        TextEdit(1, 3, "\u00e9".encode()),
        TextEdit(5, 5, b""),
    ]


@pytest.mark.parametrize(
    "value",
    [
        None,
        {},
        "edits",
        [1],
        [{"NewText": "x"}],
        [{"Span": {"start": {"offset": 1}}, "NewText": "x"}],
        [span(True, 3)],
        [span(1, False)],
        [span(1.0, 3)],
        [span("1", 3)],
        [span(1, 3, None)],
        [span(1, 3, 5)],
        [{"Span": None, "NewText": "x"}],
    ],
)
def test_parse_text_edits_rejects(value: object) -> None:
    with pytest.raises(BadRequest):
        parse_text_edits(value)


def test_wrap_deployment_keeps_the_bytes() -> None:
    inner = b'{ "manifest" : {"z":1, "a":"\\u003c"} }'
    wrapped = wrap_deployment(3, [], inner)
    assert wrapped == b'{"version":3,"deployment":' + inner + b"}"
    assert json.loads(wrapped)["deployment"]["manifest"] == {"z": 1, "a": "<"}


def test_wrap_deployment_with_features() -> None:
    wrapped = wrap_deployment(4, ["views", "hooks"], b"{}")
    assert wrapped == b'{"version":4,"features":["views","hooks"],"deployment":{}}'


@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_check_schema_accepts(version: int) -> None:
    assert check_schema(version, None) == []
    assert check_schema(version, []) == []


def test_check_schema_features() -> None:
    assert check_schema(4, sorted(KNOWN_FEATURES)) == sorted(KNOWN_FEATURES)
    assert len(KNOWN_FEATURES) == 8


@pytest.mark.parametrize(
    ("version", "features"),
    [
        (0, None),
        (5, None),
        (-1, None),
        (True, None),
        ("3", None),
        (3.0, None),
        (None, None),
        (3, ["views"]),
        (4, ["unknown"]),
        (4, ["views", "unknown"]),
        (4, "views"),
        (4, [1]),
        (4, {"views": True}),
    ],
)
def test_check_schema_rejects(version: object, features: object) -> None:
    with pytest.raises(BadRequest):
        check_schema(version, features)


@pytest.mark.parametrize(
    "value",
    [
        None,
        [],
        "x",
        {"version": 3},
        {"deployment": {}},
        {"version": 3, "deployment": []},
        {"version": 3, "deployment": None},
        {"version": 9, "deployment": {}},
    ],
)
def test_check_untyped_deployment_rejects(value: object) -> None:
    with pytest.raises(BadRequest):
        check_untyped_deployment(value)


def test_check_untyped_deployment_accepts() -> None:
    check_untyped_deployment({"version": 3, "deployment": {}})
    check_untyped_deployment({"version": 4, "features": ["taint"], "deployment": {"x": 1}})


def test_empty_deployment_is_a_valid_v3_deployment() -> None:
    value = json.loads(EMPTY_DEPLOYMENT)
    check_untyped_deployment(value)
    assert value["version"] == 3
    assert value["deployment"]["manifest"]["time"] == "0001-01-01T00:00:00Z"
    assert count_resources(value) == 0


def test_count_resources() -> None:
    assert count_resources({"deployment": {"resources": [{}, {}, {}]}}) == 3
    assert count_resources({"deployment": {"resources": None}}) == 0
    assert count_resources({"deployment": []}) == 0
    assert count_resources({}) == 0


def test_sha256_hex() -> None:
    assert sha256_hex(b"abc") == hashlib.sha256(b"abc").hexdigest()
    assert len(sha256_hex(b"")) == 64


def test_parse_state_keeps_the_text_and_counts_resources() -> None:
    text = b'{"version":3, "deployment":{"resources":[{"urn":"a"},{"urn":"b"}]}}'
    state = parse_state(text)
    assert state.text == text
    assert state.resource_count == 2
    assert parse_state(EMPTY_DEPLOYMENT).resource_count == 0


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b"{",
        b'{"version":3,"deployment":{}',
        b'{"version":3,"deployment":{}} x',
        b"[]",
        b'{"version":3}',
        b'{"version":9,"deployment":{}}',
        b'{"version":3,"deployment":' + b"[" * 100_000,
        b'{"version":3,"deployment":{"x":' + b"[" * 50_000 + b"]" * 50_000 + b"}}",
        b"\xff",
    ],
)
def test_parse_state_rejects(text: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_state(text)


def test_state_of_validates_the_parsed_value() -> None:
    assert state_of(b"t", {"version": 4, "features": ["views"], "deployment": {}}).text == b"t"
    with pytest.raises(BadRequest):
        state_of(b"t", {"version": 3, "features": ["views"], "deployment": {}})
