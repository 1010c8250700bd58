"""Strict JSON: standard JSON only, nested at most ``MAX_DEPTH`` deep.

``loads`` refuses what Python's parser accepts but Go's (the CLI's) does not read back:
NaN and Infinity, numbers a float64 cannot hold (Python reads 1e400 as inf, which would be
stored as ``Infinity``), and texts nested deeper than ``MAX_DEPTH``.

How deeply a JSON text nests is found without parsing it: no recursion, no limit of its own.

Every JSON body is held to ``MAX_DEPTH`` before it is parsed. Parsers recurse, and how
deep they may go depends on where they run (a worker thread, or the event loop below a
stack of frames), so their limit would differ from route to route; worse, what one parse
accepted, a later encode of the same value could fail on (a 500 at every read). The
limit leaves real states room: the CLI's envelopes put a resource's property values at
most 6 levels down, which leaves 250 levels to the values themselves.

Every step is a C-level pass over bytes, linear in the input.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_DEPTH = 256

_STRUCTURE = b'"[]{}'
_NOT_STRUCTURE = bytes(c for c in range(256) if c not in _STRUCTURE)
_PARENS = bytes.maketrans(b"[]{}", b"()()")
_STRING = re.compile(rb'"[^"]*"?')  # unterminated: to the end, where parsing fails anyway
_RUN = re.compile(rb"\(+|\)+")
_OPEN = ord("(")


def depth(text: bytes) -> int:
    """The deepest nesting of arrays and objects in ``text``.

    For invalid JSON, at least the depth a parser reaches before it fails: brackets in
    strings do not count, and strings are delimited exactly as a parser reads them.
    """
    return _bracket_depth(_brackets(text))


def open_at_end(text: bytes) -> int:
    """How many arrays and objects are open at the end of ``text`` (a prefix of a valid
    JSON text that does not end inside a string)."""
    brackets = _brackets(text)
    return brackets.count(b"(") - brackets.count(b")")


def _brackets(text: bytes) -> bytes:
    """The brackets of ``text`` outside strings, as '(' and ')'."""
    if b"\\" in text:
        # Escapes occur only in strings. Without escaped backslashes, and then without
        # escaped quotes, every '"' left opens or closes a string.
        text = text.replace(b"\\\\", b"").replace(b'\\"', b"")
    # Adjacent quotes pair up, so dropping them keeps every other quote's role.
    structure = text.translate(None, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in structure:
        structure = _STRING.sub(b"", structure)  # the strings that hold brackets
    return structure.translate(_PARENS)


def _bracket_depth(brackets: bytes) -> int:
    """The highest count of unclosed '(' over the prefixes of ``brackets``."""
    # Each pass drops every innermost "()", one level, at the speed of bytes.replace;
    # while passes shrink the text by a good share, they cost little in all.
    peeled = 0
    while b"()" in brackets:
        shorter = brackets.replace(b"()", b"")
        peeled += 1
        removed = len(brackets) - len(shorter)
        brackets = shorter
        if removed * 16 < len(brackets):
            break
    # Few innermost pairs are left, so few runs of one bracket: walk those.
    deepest = level = 0
    for run in _RUN.finditer(brackets):
        start, end = run.span()
        if brackets[start] == _OPEN:
            level += end - start
            deepest = max(deepest, level)
        else:
            level -= end - start
    return peeled + deepest


# Integer literals longer than this may not fit a float64 (Go reads JSON numbers so).
_FLOAT64_DIGITS = 308


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _float64_int(text: str) -> int:
    value = int(text)
    if len(text) > _FLOAT64_DIGITS and math.isinf(float(text)):
        raise ValueError(f"number {text[:40]}... is out of range")
    return value


DECODER = json.JSONDecoder(
    parse_constant=_reject_constant, parse_float=_finite_float, parse_int=_float64_int
)


def loads_counted(data: bytes, max_depth: int = MAX_DEPTH) -> tuple[Any, int | None]:
    """``loads``, and how many members the top-level object has (duplicates counted; None
    when the value is not an object)."""
    if depth(data) > max_depth:
        raise ValueError(f"nests deeper than {max_depth} levels")
    counts: list[int] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        counts.append(len(items))  # the top level's comes last
        return dict(items)

    decoder = json.JSONDecoder(
        object_pairs_hook=pairs,
        parse_constant=_reject_constant,
        parse_float=_finite_float,
        parse_int=_float64_int,
    )
    value = decoder.decode(data.decode("utf-8"))
    return value, counts[-1] if isinstance(value, dict) else None


def loads(data: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """Parse ``data`` strictly; ValueError (UnicodeDecodeError included) if it is not
    standard JSON within ``max_depth`` levels."""
    if depth(data) > max_depth:
        raise ValueError(f"nests deeper than {max_depth} levels")
    return DECODER.decode(data.decode("utf-8"))


def _null(name: str) -> None:
    return None


def stored_json(text: str) -> Any:
    """JSON the server stored. Rows written before bodies were held to float64 numbers and
    to ``MAX_DEPTH`` may hold ``NaN`` or ``Infinity``, which Go cannot decode (those read
    as null), or nest too deeply to answer with (the whole value reads as null)."""
    if depth(text.encode()) > MAX_DEPTH:
        return None
    return json.loads(text, parse_constant=_null)


def standard_json(text: str) -> str:
    """A stored JSON text, re-encoded if it may hold ``NaN`` or ``Infinity`` (see above)."""
    if "NaN" not in text and "Infinity" not in text:
        return text
    return json.dumps(stored_json(text), allow_nan=False)
