"""Deltas between checkpoint texts: computed, stored compactly, applied.

A checkpoint step is stored as the edits from the previous text to the new one. The CLI's
delta checkpoints already are such edits; for whole checkpoints the server finds them
itself (``diff_at``). States list one resource after another, and a step changes a few of
them (plus the manifest's time near the start), so the texts are aligned on resource
boundaries and compared a whole resource at a time: linear in the text, in C (bytes
comparison, hashing), with Python work per resource, not per byte.

A journal's rebuilt state is stored as an ``Assembly`` of its base instead: ranges of the
base and new bytes. Replay writes resources in the order their steps finished, not the
base's, so an update that changes 10 resources of 1000 moves most of the others; edits
would repeat every moved resource, where a range of the base costs 16 bytes.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from procella.state.checkpoints import TextEdit

# Every ResourceV3 (and pending operation's resource) starts so: Go writes `urn` first, and
# the pattern cannot occur inside a JSON string, where quotes are escaped.
_BOUNDARY = b'{"urn":"'
# Below this, a changed middle is stored as one edit: aligning would save little.
_SMALL = 4096
_CHUNK = 65536
_HEADER = struct.Struct("<QQQ")
# A stored Assembly starts with a header no edit has (it would span 16 EiB); then each of
# its parts is a range (start, end) of the old text or (_MARK, length) and new bytes.
_MARK = 2**64 - 1
_PART = struct.Struct("<QQ")
_ASSEMBLY_HEADER = _HEADER.pack(_MARK, 0, 0)


@dataclass(frozen=True)
class Assembly:
    """A new text made of ``parts``: a ``(start, end)`` range of the old text, or new bytes."""

    parts: tuple[tuple[int, int] | bytes, ...]


Delta = Sequence[TextEdit] | Assembly


def assemble(old: bytes, new: bytes) -> Assembly:
    """``new`` as ranges of ``old`` and new bytes (``apply_chain(old, [it]) == new``): its
    resources are matched to equal ones of ``old`` by their digests, wherever they are.

    Only digests and offsets are kept beside the texts (which may be 100 MB), and each run
    of resources that follow each other in both texts becomes one range.
    """
    prefix = _common_prefix(old, new)
    suffix = _common_suffix(old, new, prefix)
    old_end, new_end = len(old) - suffix, len(new) - suffix
    parts = _Parts(new)
    parts.copy(0, prefix)
    if old_end - prefix < _SMALL or new_end - prefix < _SMALL:
        parts.add(prefix, new_end)
    else:
        old_starts = _boundaries(old, prefix, old_end)
        new_starts = _boundaries(new, prefix, new_end)
        found: dict[bytes, int] = {}
        for i, digest in enumerate(_digests(old, old_starts)):
            found.setdefault(digest, i)
        for j, digest in enumerate(_digests(new, new_starts)):
            at = found.get(digest)
            if at is None:
                parts.add(new_starts[j], new_starts[j + 1])
            else:
                parts.copy(old_starts[at], old_starts[at + 1])
    parts.copy(old_end, len(old))
    return parts.assembly()


class _Parts:
    """An Assembly as it is built: adjacent ranges of the old text, and of the new text's
    own bytes, are joined as they come."""

    def __init__(self, new: bytes) -> None:
        self._new = memoryview(new)
        self._parts: list[tuple[bool, int, int]] = []  # (copied from old?, start, end)

    def copy(self, start: int, end: int) -> None:
        self._append(True, start, end)

    def add(self, start: int, end: int) -> None:
        self._append(False, start, end)

    def _append(self, copied: bool, start: int, end: int) -> None:
        if start == end:
            return
        if self._parts and self._parts[-1][0] == copied and self._parts[-1][2] == start:
            self._parts[-1] = (copied, self._parts[-1][1], end)
        else:
            self._parts.append((copied, start, end))

    def assembly(self) -> Assembly:
        return Assembly(
            tuple((a, b) if copied else bytes(self._new[a:b]) for copied, a, b in self._parts)
        )


# Where the elements of a resources array after its first start (one past the comma).
ELEMENT = re.compile(rb',\{"urn":"')


def cuts(text: bytes) -> list[int]:
    """Offsets where a resource that follows another starts (after its comma)."""
    return [m.start() + 1 for m in ELEMENT.finditer(text)]


def diff_at(
    old: bytes, new: bytes, old_cuts: Sequence[int], new_cuts: Sequence[int]
) -> list[TextEdit]:
    """``diff``, for texts already cut into parts (``cuts``, or any increasing offsets
    inside each text): parts are matched one by one (equal bytes; else by the resource's
    URN, to tell a changed resource from an added or removed one), so a step costs a
    comparison of the texts' bytes and work per part, and each run of parts that differ
    becomes one edit, trimmed to the bytes that differ. Like ``diff``, any cuts give edits
    that turn ``old`` into ``new``; resource cuts make them small.
    """
    ob, nb = _bounds(old, old_cuts), _bounds(new, new_cuts)
    view = memoryview(old)
    old_keys: dict[bytes, int] | None = None
    new_keys: dict[bytes, int] | None = None
    edits: list[TextEdit] = []
    i = j = 0
    i0 = j0 = -1  # where the current run of differing parts started, if one did
    n_old, n_new = len(ob) - 1, len(nb) - 1
    while i < n_old and j < n_new:
        a, b, c, d = ob[i], ob[i + 1], nb[j], nb[j + 1]
        if b - a == d - c and new.startswith(view[a:b], c):
            if i0 >= 0:
                edits.extend(_trimmed(old, new, ob[i0], a, nb[j0], c))
                i0 = j0 = -1
            i, j = i + 1, j + 1
            continue
        if i0 < 0:
            i0, j0 = i, j
        old_key, new_key = _key(old, a, b), _key(new, c, d)
        if old_key == new_key:  # changed in place
            i, j = i + 1, j + 1
            continue
        if old_keys is None or new_keys is None:
            old_keys = {_key(old, ob[k], ob[k + 1]): k for k in range(n_old)}
            new_keys = {_key(new, nb[k], nb[k + 1]): k for k in range(n_new)}
        if old_keys.get(new_key, -1) < i:  # the new part is not further on in the old text
            j += 1
        elif new_keys.get(old_key, -1) < j:  # the old part is not further on in the new text
            i += 1
        else:  # both further on: moved
            i, j = i + 1, j + 1
    if i0 < 0:
        i0, j0 = i, j
    edits.extend(_trimmed(old, new, ob[i0], len(old), nb[j0], len(new)))
    return edits


def _bounds(text: bytes, at: Sequence[int]) -> list[int]:
    return [0, *(x for x in at if 0 < x < len(text)), len(text)]


def _key(text: bytes, start: int, end: int) -> bytes:
    """A part's identity for matching: its resource's URN (its first string), or its
    position when it has none."""
    if text.startswith(_BOUNDARY, start):
        close = text.find(b'"', start + len(_BOUNDARY), end)
        if close != -1:
            return text[start:close]
    return b"@%d" % start


def _trimmed(old: bytes, new: bytes, a: int, b: int, c: int, d: int) -> list[TextEdit]:
    """The edit of old[a:b] into new[c:d], without the bytes both begin and end with."""
    if b - a == d - c and new.startswith(memoryview(old)[a:b], c):
        return []
    o, n = old[a:b], new[c:d]
    prefix = _common_prefix(o, n)
    suffix = _common_suffix(o, n, prefix)
    return [TextEdit(a + prefix, b - suffix, n[prefix : len(n) - suffix])]


def _common_prefix(a: bytes, b: bytes) -> int:
    limit = min(len(a), len(b))
    i = 0
    while i < limit and a[i : i + _CHUNK] == b[i : i + _CHUNK]:
        i += _CHUNK
    end = min(i + _CHUNK, limit)
    while i < end and a[i] == b[i]:
        i += 1
    return min(i, limit)


def _common_suffix(a: bytes, b: bytes, prefix: int) -> int:
    """The longest common suffix that does not overlap ``prefix`` in either text."""
    limit = min(len(a), len(b)) - prefix
    n = 0
    while (
        n + _CHUNK <= limit
        and a[len(a) - n - _CHUNK : len(a) - n] == b[len(b) - n - _CHUNK : len(b) - n]
    ):
        n += _CHUNK
    while n < limit and a[len(a) - n - 1] == b[len(b) - n - 1]:
        n += 1
    return n


def _boundaries(text: bytes, begin: int, end: int) -> list[int]:
    """Offsets where ``text[begin:end]`` is cut: ``begin``, each resource start after it,
    and ``end``."""
    starts = [begin]
    at = text.find(_BOUNDARY, begin + 1, end)
    while at != -1:
        starts.append(at)
        at = text.find(_BOUNDARY, at + 1, end)
    starts.append(end)
    return starts


def _digests(text: bytes, starts: Sequence[int]) -> list[bytes]:
    """A digest of each part (equal digests: equal bytes, but for a 128-bit collision)."""
    view = memoryview(text)
    return [
        hashlib.blake2b(view[starts[i] : starts[i + 1]], digest_size=16).digest()
        for i in range(len(starts) - 1)
    ]


def encode(delta: Delta) -> bytes:
    """A delta as stored. Edits: for each, start, end and length (little-endian u64), then
    the text. An Assembly: the header (_MARK, 0, 0), then its parts (see _MARK)."""
    out = []
    if isinstance(delta, Assembly):
        out.append(_ASSEMBLY_HEADER)
        for part in delta.parts:
            if isinstance(part, bytes):
                out.extend((_PART.pack(_MARK, len(part)), part))
            else:
                out.append(_PART.pack(*part))
        return b"".join(out)
    for edit in delta:
        if edit.start == _MARK:  # no text is that long: the edit was not checked against one
            raise ValueError("an edit cannot start at 2**64 - 1")
        out.extend((_HEADER.pack(edit.start, edit.end, len(edit.new_text)), edit.new_text))
    return b"".join(out)


def decode(data: bytes) -> Delta:
    """A stored delta (raises struct.error when it is cut short)."""
    if data.startswith(_ASSEMBLY_HEADER):
        return _decode_assembly(data, _HEADER.size)
    edits = []
    at = 0
    while at < len(data):
        start, end, length = _HEADER.unpack_from(data, at)
        at += _HEADER.size
        edits.append(TextEdit(start, end, data[at : at + length]))
        at += length
    return edits


def _decode_assembly(data: bytes, at: int) -> Assembly:
    parts: list[tuple[int, int] | bytes] = []
    while at < len(data):
        start, end = _PART.unpack_from(data, at)
        at += _PART.size
        if start == _MARK:
            parts.append(data[at : at + end])
            at += end
        else:
            parts.append((start, end))
    return Assembly(tuple(parts))


def apply_chain(base: bytes, chain: Sequence[Delta]) -> bytes:
    """Apply deltas one after the other (each one's offsets are into the text before it).

    The text is kept as a list of views into the base and the deltas' texts, so a delta
    costs work in the number of pieces, not a copy of the whole text; only the final join
    copies. Raises ValueError for an edit or range outside the text, or edits that overlap.
    """
    pieces: list[memoryview] = [memoryview(base)]
    for delta in chain:
        if isinstance(delta, Assembly):
            pieces = _assembled(pieces, delta)
            continue
        # From the last edit back: earlier offsets stay valid while later ones are applied.
        # Sorted stably forward, then walked backward (not sorted with reverse=True, which
        # keeps ties in their given order): insertions at one offset then end up in the
        # order they were sent, as in apply_text_edits and gotextdiff.
        last = None
        for edit in reversed(sorted(delta, key=lambda e: (e.start, e.end))):
            if last is not None and edit.end > last:
                raise ValueError(f"edit spans overlap at offset {edit.end}")
            pieces = _replace(pieces, edit)
            last = edit.start
    return b"".join(pieces)


def _assembled(pieces: list[memoryview], assembly: Assembly) -> list[memoryview]:
    starts = list(itertools.accumulate((len(p) for p in pieces), initial=0))
    out: list[memoryview] = []
    for part in assembly.parts:
        if isinstance(part, bytes):
            out.append(memoryview(part))
            continue
        start, end = part
        if not 0 <= start <= end <= starts[-1]:
            raise ValueError(f"range {start}..{end} is outside the text ({starts[-1]} bytes)")
        i = bisect.bisect_right(starts, start) - 1
        while start < end:
            stop = min(end, starts[i + 1])
            out.append(pieces[i][start - starts[i] : stop - starts[i]])
            start, i = stop, i + 1
    return out


def _replace(pieces: list[memoryview], edit: TextEdit) -> list[memoryview]:
    starts = list(itertools.accumulate((len(p) for p in pieces), initial=0))
    total = starts[-1]
    if not 0 <= edit.start <= edit.end <= total:
        raise ValueError(f"edit span {edit.start}..{edit.end} is outside the text ({total} bytes)")
    first = bisect.bisect_right(starts, edit.start) - 1
    last = bisect.bisect_left(starts, edit.end) - 1 if edit.end > 0 else 0
    first, last = max(first, 0), max(last, first)
    head = pieces[first][: edit.start - starts[first]] if first < len(pieces) else memoryview(b"")
    tail_piece = pieces[last] if last < len(pieces) else memoryview(b"")
    tail = tail_piece[edit.end - starts[last] :] if last < len(pieces) else memoryview(b"")
    middle = [p for p in (head, memoryview(edit.new_text), tail) if len(p)]
    return pieces[:first] + middle + pieces[last + 1 :]
