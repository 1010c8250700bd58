"""procella.state.pieces: a whole checkpoint validated in pieces refuses exactly what the
whole strict parse refuses, and a step parses only the resources it changed."""

from __future__ import annotations

import itertools
import json
import random
from typing import Any

import pytest

from procella import strictjson
from procella.state import checkpoints as cp
from procella.state import deltas, pieces
from tests.helpers import compact, untyped

MAX = strictjson.MAX_DEPTH


def text_of(state: dict[str, Any]) -> bytes:
    return compact(state)


def state(n: int = 5) -> dict[str, Any]:
    return untyped(n)


def step(
    old: bytes, new: bytes, previous: pieces.Pieces | None
) -> tuple[Any, pieces.Pieces | None]:
    edits = deltas.diff_at(old, new, deltas.cuts(old), deltas.cuts(new))
    assert cp.apply_text_edits(old, edits) == new
    return pieces.check(new, MAX, previous, edits)


def with_raw_output(base: dict[str, Any], index: int, raw: bytes) -> bytes:
    """The state's text with resource ``index``'s output ``value`` replaced by ``raw``."""
    marker = 987654321
    base["deployment"]["resources"][index]["outputs"]["value"] = marker
    return text_of(base).replace(str(marker).encode(), raw, 1)


def test_a_cli_text_is_checked_in_pieces() -> None:
    s = state()
    skeleton, got = pieces.check(text_of(s), MAX)
    assert got is not None and len(got.spans) == 5
    assert skeleton["deployment"]["resources"] == ["1"]
    assert skeleton["version"] == 3
    assert got.level == 3


def test_a_step_parses_only_what_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    s = state(50)
    old = text_of(s)
    _, first = pieces.check(old, MAX)
    s["deployment"]["manifest"]["time"] = "2024-01-01T00:00:01Z"
    s["deployment"]["resources"][20]["outputs"]["value"] = "changed"
    s["deployment"]["resources"].append(dict(s["deployment"]["resources"][5], urn="urn:new"))
    new = text_of(s)
    parsed: list[str] = []
    real = strictjson.DECODER.decode

    def counting(text: str) -> Any:
        parsed.append(text)
        return real(text)

    monkeypatch.setattr(strictjson.DECODER, "decode", counting)
    _, second = step(old, new, first)
    assert second is not None
    # The changed resource and the added one (the skeleton has a parser of its own).
    assert len(parsed) == 2
    assert sum(len(p) for p in parsed) < len(new) // 10


@pytest.mark.parametrize(
    "raw",
    [
        b"NaN",
        b"Infinity",
        b"-Infinity",
        b"1e400",
        b"1" * 400,
        b'"\\ud800',
        b"[1,]",
        b"{1:2}",
        b"tru",
        b'"a" "b"',
        b'"\xff"',
        b'"\xc3"',
    ],
)
def test_what_the_whole_parse_refuses_a_changed_piece_refuses(raw: bytes) -> None:
    s = state(5)
    old = text_of(s)
    _, first = pieces.check(old, MAX)
    bad = with_raw_output(s, 3, raw)
    with pytest.raises(ValueError):
        strictjson.loads(bad)
    with pytest.raises(pieces.InvalidText):
        step(old, bad, first)
    with pytest.raises(pieces.InvalidText):
        pieces.check(bad, MAX)


@pytest.mark.parametrize("where", ["manifest", "tail", "between"])
def test_a_broken_skeleton_is_refused(where: str) -> None:
    s = state(5)
    old = text_of(s)
    _, first = pieces.check(old, MAX)
    if where == "manifest":
        bad = old.replace(b'"magic":""', b'"magic":NaN')
    elif where == "tail":
        bad = old[:-1] + b',"x":1e999}'
    else:  # two elements with no comma between: no cut there, so one piece that is no value
        bad = old.replace(b'},{"urn":"urn:pulumi:dev::proj::pulumi-python', b'}{"urn":"x', 1)
    with pytest.raises(pieces.InvalidText):
        step(old, bad, first)


@pytest.mark.parametrize("level_over", [0, 1])
def test_depth_is_counted_from_the_array(level_over: int) -> None:
    """A resource nested so that the text is exactly at the limit passes; one level more
    is refused, whether the deep part changed or was there before."""
    s = state(3)
    old = text_of(s)
    _, first = pieces.check(old, MAX)
    # Resources sit at level 3 (wrapper, deployment, array); the resource object adds 1,
    # outputs 1: a value at level 5 may nest MAX - 5 deep.
    deep = b"[" * (MAX - 5 + level_over) + b"]" * (MAX - 5 + level_over)
    new = with_raw_output(s, 1, deep)
    if level_over:
        with pytest.raises(pieces.InvalidText):
            step(old, new, first)
        with pytest.raises(ValueError):
            strictjson.loads(new)
        return
    assert strictjson.depth(new) == MAX
    _, second = step(old, new, first)
    # The deep resource kept, another changed: still within the limit, at one less.
    s2 = json.loads(new)
    s2["deployment"]["resources"][2]["outputs"]["value"] = "x"
    newer = text_of(s2)
    _, third = step(new, newer, second)
    assert third is not None
    # A limit one lower (a verbatim body holds the text one level down) refuses it, also
    # where the deep resource is an unchanged piece.
    with pytest.raises(pieces.InvalidText):
        pieces.check(newer, MAX - 1)
    with pytest.raises(pieces.InvalidText):
        pieces.check(newer, MAX - 1, third, [])


def test_an_element_pattern_inside_a_resource_falls_back_to_the_whole_parse() -> None:
    s = state(4)
    s["deployment"]["resources"][2]["outputs"]["value"] = [{"a": 1}, {"urn": "inner"}]
    text = text_of(s)
    assert b',{"urn":"inner' in text
    skeleton, got = pieces.check(text, MAX)
    assert got is None  # parsed whole: the cut inside the resource made a piece invalid
    assert skeleton == s


@pytest.mark.parametrize(
    "text",
    [
        b'{"version":3,"deployment":{"manifest":{}}}',
        b'{"version":3,"deployment":{"resources":[]}}',
        b'{"version":3,"deployment":{"resources" : [{"urn":"a"}]}}',
        b'{"version":3,"deployment":{"resources":[{"urn":"a"} , {"urn":"b"}]}}',
    ],
)
def test_other_layouts_are_parsed_whole(text: bytes) -> None:
    parsed, got = pieces.check(text, MAX)
    assert got is None
    assert parsed == json.loads(text)


@pytest.mark.parametrize("seed", range(20))
def test_pieces_carried_through_steps_are_what_was_checked(seed: int) -> None:
    """A replica that catches up by deltas moves what it checked through them: every
    element it still vouches for has the bytes (and depth) of one it checked, and a step
    checked with the carried pieces accepts and refuses as a whole parse does."""
    rng = random.Random(seed)
    s = state(30)
    old = text_of(s)
    _, known = pieces.check(old, MAX)
    assert known is not None
    checked = {old[a:b]: d for a, (b, d) in known.spans.items()}
    texts = [old]
    for _ in range(3):  # steps another replica took
        resources = s["deployment"]["resources"]
        for _ in range(rng.randint(1, 3)):
            op = rng.choice(["change", "remove", "add"])
            at = rng.randrange(1, len(resources))
            if op == "change":
                resources[at] = dict(resources[at], outputs={"value": rng.random()})
            elif op == "remove" and len(resources) > 2:
                del resources[at]
            else:
                resources.insert(at, dict(resources[at], urn=f"urn:new:{rng.random()}"))
        s["deployment"]["manifest"]["time"] = str(rng.random())
        texts.append(text_of(s))
    for a, b in itertools.pairwise(texts):
        edits = deltas.diff_at(a, b, deltas.cuts(a), deltas.cuts(b))
        known = pieces.carry(known, edits, deltas.cuts(b))
    new = texts[-1]
    for start, (end, depth) in known.spans.items():
        assert checked[new[start:end]] == depth
    assert len(known.spans) >= 20  # most of them survive
    nxt = with_raw_output(json.loads(new), 5, b'"next"')
    assert step(new, nxt, known)[1] is not None
    bad = with_raw_output(json.loads(new), 5, b"NaN")
    with pytest.raises(pieces.InvalidText):
        step(new, bad, known)
