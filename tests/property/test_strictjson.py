"""procella.strictjson: standard JSON only, nested at most MAX_DEPTH deep.

``depth`` finds the nesting without parsing; ``loads`` reads what Go reads back the same
and refuses the rest with ValueError.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from procella import strictjson
from procella.strictjson import MAX_DEPTH, depth
from tests.property.strategies import (
    any_json,
    json_bytes,
    json_texts,
    plain_text,
    reference_depth,
)

# Strings full of what the depth scanner must see through: brackets, quotes, escapes.
tricky_text = st.text(st.sampled_from('[]{}"\\/ a\u00e9'), max_size=10)
tricky_json = st.recursive(
    st.none() | st.integers() | tricky_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(tricky_text, inner, max_size=3),
    max_leaves=15,
)


@given(tricky_json.flatmap(lambda v: st.tuples(st.just(v), json_texts(v))))
def test_depth_of_a_valid_text_is_its_nesting(case: tuple[Any, bytes]) -> None:
    value, text = case
    assert depth(text) == reference_depth(value)


@given(st.integers(0, 400), st.sampled_from(["[", '{"k":']), st.sampled_from(["1", '"]]"', "[]"]))
def test_depth_of_deep_nesting(levels: int, opener: str, leaf: str) -> None:
    closer = "]" if opener == "[" else "}"
    text = (opener * levels + leaf + closer * levels).encode()
    assert depth(text) == levels + (leaf == "[]")


@given(any_json.flatmap(lambda v: st.tuples(st.just(v), json_texts(v))))
def test_loads_reads_valid_json_exactly(case: tuple[Any, bytes]) -> None:
    value, text = case
    if reference_depth(value) > MAX_DEPTH:
        with pytest.raises(ValueError):
            strictjson.loads(text)
        return
    assert strictjson.loads(text) == value


@given(json_bytes)
def test_loads_of_any_bytes_is_standard_json_or_a_value_error(data: bytes) -> None:
    try:
        value = strictjson.loads(data)
    except ValueError:
        return
    # What it accepted, Go reads back the same: no NaN or Infinity, nothing too deep.
    out = json.dumps(value, allow_nan=False)
    assert strictjson.loads(out.encode()) == value
    assert reference_depth(value) <= MAX_DEPTH


@given(
    st.sampled_from(["", "-"]),
    st.text("0123456789", min_size=1, max_size=3).filter(lambda d: d == "0" or d[0] != "0"),
    st.text("0123456789", max_size=3),
    st.integers(-400, 400),
)
def test_a_float_is_refused_exactly_when_float64_cannot_hold_it(
    sign: str, whole: str, fraction: str, exponent: int
) -> None:
    text = sign + whole + ("." + fraction if fraction else "") + f"e{exponent}"
    if math.isinf(float(text)):
        with pytest.raises(ValueError):
            strictjson.loads(text.encode())
    else:
        assert strictjson.loads(text.encode()) == float(text)


@given(st.sampled_from(["", "-"]), st.integers(1, 9), st.integers(300, 320), st.integers(0, 9))
def test_an_integer_is_refused_exactly_when_float64_cannot_hold_it(
    sign: str, lead: int, digits: int, fill: int
) -> None:
    text = sign + str(lead) + str(fill) * (digits - 1)
    if math.isinf(float(text)):
        with pytest.raises(ValueError):
            strictjson.loads(text.encode())
    else:
        assert strictjson.loads(text.encode()) == int(text)


@given(
    st.sampled_from(["NaN", "Infinity", "-Infinity"]),
    st.sampled_from(["{}", '{"a":{}}', "[{}]", "[1,{}]"]),
)
def test_non_finite_constants_are_refused_anywhere(constant: str, shape: str) -> None:
    text = shape.replace("{}", '{"x":' + constant + "}", 1)
    with pytest.raises(ValueError):
        strictjson.loads(text.encode())
    # As strings they are fine.
    assert strictjson.loads(shape.replace("{}", '{"x":"' + constant + '"}', 1).encode())


@given(plain_text)
def test_loads_refuses_text_that_is_not_utf8(text: str) -> None:
    raw = json.dumps(text, ensure_ascii=False).encode("utf-16")
    with pytest.raises(ValueError):
        strictjson.loads(raw)
