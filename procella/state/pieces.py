"""Validating a whole checkpoint text in pieces, so that a step parses only what changed.

A whole checkpoint is the full state at every step, and a state is mostly its resources
array, of which a step changes a few elements. The text is valid strict JSON when

* its *skeleton* — the text with the resources array's elements replaced by the one
  element ``"1"`` — is (a small text: manifest, secrets provider, pending operations), and
* each element is a valid strict JSON value, nested no deeper than the limit allows at the
  depth of the array.

That is exact, not a heuristic: if the skeleton is valid, the ``"1"`` stands where an array
element stands (were the ``[`` before it inside a string, its first quote would end that
string and the ``1`` after it would be a syntax error wherever it stood), so replacing it by
any run of valid values joined by commas keeps the text valid, and every token of the text
is a token of the skeleton or of an element. Where the elements are cut does not matter for
that argument: a cut in the wrong place (the element pattern inside a resource) makes a
piece fail to parse, and then the whole text is parsed, which decides.

An element need not be parsed again when its bytes are those of an element of the previous
text that was validated so (``Pieces``), found through the edits between the two texts:
so a step parses its skeleton and the elements it changed. A text that does not have the
shape (another layout, whitespace between elements, no resources) is parsed whole, as are
texts whose previous text was not validated in pieces on this replica: the first step of an
update, a replica that did not see the previous step. That costs time, never correctness.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from procella import strictjson
from procella.errors import BadRequest
from procella.state import deltas
from procella.state.checkpoints import TextEdit

# Every element of a CLI's resources array starts so (Go writes `urn` first); the key is
# the deployment's, which follows the manifest and secrets provider.
_KEY = b'"resources":['
_FIRST = b'{"urn":"'
SENTINEL = b'"1"'


class InvalidText(BadRequest):
    """The text is not strict JSON within the depth limit."""


@dataclass(frozen=True)
class TextCheck:
    """What a whole checkpoint's text must pass before it is stored: strict JSON nested at
    most ``max_depth`` deep, an object of exactly ``members`` members when given (a text
    the server wrapped around a value: the value was one value, not several), and
    ``schema`` (given the parsed skeleton; raises BadRequest)."""

    max_depth: int
    schema: Callable[[Any], None]
    members: int | None = None


@dataclass(frozen=True)
class Pieces:
    """How a text was validated: ``spans`` maps the start of each resources-array element
    to its end and its own depth; ``level`` is how deep the array's elements are."""

    level: int
    spans: dict[int, tuple[int, int]]
    cuts: list[int]  # deltas.cuts of the text

    @property
    def cost(self) -> int:
        """About the bytes it holds (a dict entry and a tuple per element, a list item per
        cut), for a cache's budget."""
        return 200 * len(self.spans) + 40 * len(self.cuts) + 200


def check(
    text: bytes,
    max_depth: int,
    previous: Pieces | None = None,
    edits: Sequence[TextEdit] | None = None,
    cuts: list[int] | None = None,
    members: int | None = None,
) -> tuple[Any, Pieces | None]:
    """Validate ``text`` as strict JSON nested at most ``max_depth`` deep.

    ``previous`` describes the validated text that ``edits`` turn into ``text``. Returns
    the parsed skeleton (the text with its resources array replaced by ``["1"]``; the whole
    parsed text when it was parsed whole) and how it was validated (None: whole). Raises
    InvalidText, also when ``members`` is given and the text is not an object of that many
    members. ``cuts``: ``deltas.cuts(text)``, when the caller has them.
    """
    found: tuple[Any, Pieces | None, int | None] | None
    try:
        found = _in_pieces(text, max_depth, previous, edits, cuts)
    except (ValueError, RecursionError):
        found = None
    if found is None:
        try:
            parsed, count = strictjson.loads_counted(text, max_depth)
        except RecursionError:
            raise InvalidText("the checkpoint is nested too deeply") from None
        except ValueError as exc:
            raise InvalidText(f"the checkpoint is not valid JSON: {exc}") from None
        found = parsed, None, count
    skeleton, got, count = found
    if members is not None and count != members:
        raise InvalidText("the checkpoint is not one JSON object")
    return skeleton, got


def _in_pieces(
    text: bytes,
    max_depth: int,
    previous: Pieces | None,
    edits: Sequence[TextEdit] | None,
    cuts: list[int] | None,
) -> tuple[Any, Pieces, int | None] | None:
    """The skeleton and pieces, or None when the text must be parsed whole."""
    if cuts is None:
        cuts = deltas.cuts(text)
    shape = elements(text, max_depth, cuts)
    if shape is None:
        return None
    starts, ends = shape
    skeleton, count = strictjson.loads_counted(skeleton_text(text, starts, ends), max_depth)
    level = strictjson.open_at_end(text[: starts[0]])
    known = _Known(previous, edits) if previous is not None and edits is not None else None
    spans: dict[int, tuple[int, int]] = {}
    for start, stop in zip(starts, ends, strict=True):
        found = None if known is None else known.depth(start, stop)
        if found is None:
            piece = text[start:stop]
            found = strictjson.depth(piece)
            if level + found > max_depth:
                return None
            strictjson.DECODER.decode(piece.decode("utf-8"))
        elif level + found > max_depth:
            return None
        spans[start] = (stop, found)
    return skeleton, Pieces(level, spans, cuts), count


def elements(text: bytes, max_depth: int, cuts: list[int]) -> tuple[list[int], list[int]] | None:
    """Where the elements of the resources array start and end (before the comma that
    follows each), as ``cuts`` (``deltas.cuts(text)``) suggest; None when the text does
    not have the shape.

    Only the last element is parsed here (the array's ``]`` must follow it): the caller
    parses the skeleton and each element, and a wrong cut makes one of them fail. Raises
    ValueError or RecursionError when the last element is not JSON.
    """
    key = text.find(_KEY)
    if key < 1 or text[key - 1] not in b"{,":
        return None
    head = key + len(_KEY)
    if not text.startswith(_FIRST, head):
        return None
    starts = [head, *cuts[bisect.bisect_right(cuts, head) :]]
    # The last element ends where a parser says; the array's ']' must follow it.
    last = text[starts[-1] :]
    if strictjson.depth(last) > max_depth:
        return None
    decoded = last.decode("utf-8")
    _, end = strictjson.DECODER.raw_decode(decoded)
    tail = starts[-1] + (end if last.isascii() else len(decoded[:end].encode()))
    if not text.startswith(b"]", tail):
        return None
    return starts, [s - 1 for s in starts[1:]] + [tail]


def skeleton_text(text: bytes, starts: list[int], ends: list[int]) -> bytes:
    """``text`` with the resources array's elements replaced by the one element ``"1"``."""
    return text[: starts[0]] + SENTINEL + text[ends[-1] :]


def carry(previous: Pieces, edits: Sequence[TextEdit], cuts: list[int]) -> Pieces:
    """``previous`` moved through ``edits`` (which turn its text into one whose
    ``deltas.cuts`` are ``cuts``): the elements no edit touched, at their new places. A
    replica that catches up on steps another replica checked keeps what it knew so."""
    ordered = sorted(edits, key=lambda e: (e.start, e.end))
    spans: dict[int, tuple[int, int]] = {}
    k, shift = 0, 0
    for start, (end, depth) in previous.spans.items():
        # Edits wholly before the element (an insertion at its start is before it).
        while k < len(ordered) and (
            ordered[k].end < start
            or (ordered[k].end == start and ordered[k].start < start)
            or ordered[k].start == ordered[k].end == start
        ):
            edit = ordered[k]
            shift += len(edit.new_text) - (edit.end - edit.start)
            k += 1
        if k < len(ordered) and ordered[k].start < end:
            continue  # touched: unknown now
        spans[start + shift] = (end + shift, depth)
    return Pieces(previous.level, spans, cuts)


class _Known:
    """Which spans of the new text are validated elements of the previous one: those in a
    stretch no edit touched, at the place of an element of the previous text."""

    def __init__(self, previous: Pieces, edits: Sequence[TextEdit]) -> None:
        self.previous = previous
        # Unchanged stretches of the new text: [begin, end) with the shift from the old.
        self.begins: list[int] = []
        self.ends: list[int] = []
        self.shifts: list[int] = []
        shift = at = 0
        for edit in sorted(edits, key=lambda e: (e.start, e.end)):
            self._stretch(at + shift, edit.start + shift, shift)
            shift += len(edit.new_text) - (edit.end - edit.start)
            at = edit.end
        self._stretch(at + shift, None, shift)

    def _stretch(self, begin: int, end: int | None, shift: int) -> None:
        self.begins.append(begin)
        self.ends.append(-1 if end is None else end)
        self.shifts.append(shift)

    def depth(self, start: int, stop: int) -> int | None:
        """The depth of the new text's [start, stop) if it is a validated element."""
        i = bisect.bisect_right(self.begins, start) - 1
        if i < 0:
            return None
        end = self.ends[i]
        if end != -1 and stop > end:
            return None
        shift = self.shifts[i]
        span = self.previous.spans.get(start - shift)
        if span is None or span[0] != stop - shift:
            return None
        return span[1]
