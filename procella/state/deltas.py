"""Deltas between checkpoint texts: computed, stored compactly, applied.

A checkpoint step is stored as the edits from the previous text to the new one. The CLI's
delta checkpoints already are such edits; for whole checkpoints (and a journal's rebuilt
state) the server finds them itself. States list one resource after another, and a step
changes a few of them (plus the manifest's time near the start), so the diff aligns the
two texts on resource boundaries and compares whole resources: linear in the text, in C
(bytes comparison, hashing), with Python work per resource, not per byte.
"""

from __future__ import annotations

import bisect
import difflib
import hashlib
import itertools
import re
import struct
from collections.abc import Sequence

from procella.state.checkpoints import TextEdit

# Every ResourceV3 (and pending operation's resource) starts so: Go writes `urn` first, and
# the pattern cannot occur inside a JSON string, where quotes are escaped.
_BOUNDARY = b'{"urn":"'
# Below this, a changed middle is stored as one edit: aligning would save little.
_SMALL = 4096
_CHUNK = 65536
_HEADER = struct.Struct("<QQQ")


def diff(old: bytes, new: bytes) -> list[TextEdit]:
    """Edits that turn ``old`` into ``new`` (``apply_text_edits(old, diff(old, new)) == new``).

    The parts between the common prefix and suffix are matched by their digests, so no
    copy of either text is made beside the edits (the texts may be 100 MB).
    """
    prefix = _common_prefix(old, new)
    suffix = _common_suffix(old, new, prefix)
    old_end, new_end = len(old) - suffix, len(new) - suffix
    if old_end == prefix and new_end == prefix:
        return []
    if old_end - prefix < _SMALL or new_end - prefix < _SMALL:
        return [TextEdit(prefix, old_end, new[prefix:new_end])]
    old_starts, new_starts = _boundaries(old, prefix, old_end), _boundaries(new, prefix, new_end)
    old_parts, new_parts = _digests(old, old_starts), _digests(new, new_starts)
    matcher = difflib.SequenceMatcher(None, old_parts, new_parts, autojunk=False)
    edits: list[TextEdit] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag != "equal":
            start, end = old_starts[i1], old_starts[i2]
            edits.append(TextEdit(start, end, new[new_starts[j1] : new_starts[j2]]))
    return edits


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


def encode(edits: Sequence[TextEdit]) -> bytes:
    """Edits as stored: for each, start, end and length (little-endian u64), then the text."""
    parts = []
    for edit in edits:
        parts.append(_HEADER.pack(edit.start, edit.end, len(edit.new_text)))
        parts.append(edit.new_text)
    return b"".join(parts)


def decode(data: bytes) -> list[TextEdit]:
    edits = []
    at = 0
    while at < len(data):
        start, end, length = _HEADER.unpack_from(data, at)
        at += _HEADER.size
        edits.append(TextEdit(start, end, data[at : at + length]))
        at += length
    return edits


def apply_chain(base: bytes, chain: Sequence[Sequence[TextEdit]]) -> bytes:
    """Apply deltas one after the other (each one's offsets are into the text before it).

    The text is kept as a list of views into the base and the edits' texts, so a delta
    costs work in the number of pieces, not a copy of the whole text; only the final join
    copies. Raises ValueError for an edit outside the text or edits that overlap.
    """
    pieces: list[memoryview] = [memoryview(base)]
    for edits in chain:
        # From the last edit back: earlier offsets stay valid while later ones are applied.
        # Sorted stably forward, then walked backward (not sorted with reverse=True, which
        # keeps ties in their given order): insertions at one offset then end up in the
        # order they were sent, as in apply_text_edits and gotextdiff.
        last = None
        for edit in reversed(sorted(edits, key=lambda e: (e.start, e.end))):
            if last is not None and edit.end > last:
                raise ValueError(f"edit spans overlap at offset {edit.end}")
            pieces = _replace(pieces, edit)
            last = edit.start
    return b"".join(pieces)


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
