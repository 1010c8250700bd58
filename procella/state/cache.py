"""A per-replica cache of checkpoint texts, keyed by their SHA-256.

Delta checkpoints need the previous text of the update. Fetching it from the database or
the blob store on every step is the slow part of a large stack, so recent texts are kept
here. The key is the content's own hash, and the caller always asks for the hash the
database row holds, so a miss costs a read and a stale entry cannot exist.

Each text belongs to a stack, and a stack keeps only its newest text: the next step
needs that one and no other, so a large stack holds one copy, not a window of them. With
the text goes its position (version, step), when the caller knows it: a replica whose
newest text is a few steps behind (behind a load balancer, the steps of one update land
on every replica) catches up by applying the steps' deltas, not by rebuilding it all.
"""

from __future__ import annotations

from collections import OrderedDict

from procella.state.pieces import Pieces


class CheckpointCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._newest: dict[str, str] = {}  # stack id -> sha256 of its newest text
        self._position: dict[str, tuple[int, int]] = {}  # stack id -> its (version, seq)
        self._pieces: dict[str, Pieces] = {}  # sha256 -> how the text was validated
        self._size = 0

    def get(self, sha256: str) -> bytes | None:
        text = self._items.get(sha256)
        if text is not None:
            self._items.move_to_end(sha256)
        return text

    def newest(self, stack_id: str) -> tuple[int, int, bytes, Pieces | None] | None:
        """The stack's newest text with its (version, seq) and how it was validated, if
        cached and placed."""
        sha256 = self._newest.get(stack_id)
        position = self._position.get(stack_id)
        text = None if sha256 is None else self._items.get(sha256)
        if text is None or position is None or sha256 is None:
            return None
        return (*position, text, self._pieces.get(sha256))

    def pieces(self, sha256: str) -> Pieces | None:
        """How the cached text was validated in pieces, if it was (``state.pieces``)."""
        return self._pieces.get(sha256)

    def put(
        self,
        sha256: str,
        text: bytes,
        stack_id: str,
        position: tuple[int, int] | None = None,
        pieces: Pieces | None = None,
    ) -> None:
        """Keep ``text`` as the stack's newest; ``position`` is its (version, seq),
        ``pieces`` how it was validated (counted in the cache's size too)."""
        if len(text) > self.max_bytes:
            return
        older = self._newest.get(stack_id)
        if older is not None and older != sha256:
            self._drop(older)
            self._position.pop(stack_id, None)
        if position is not None:
            self._position[stack_id] = position
        self._newest[stack_id] = sha256
        if sha256 in self._items:
            self._items.move_to_end(sha256)
        else:
            self._items[sha256] = text
            self._size += len(text)
        if pieces is not None and len(text) + pieces.cost <= self.max_bytes:
            known = self._pieces.pop(sha256, None)
            self._size += pieces.cost - (0 if known is None else known.cost)
            self._pieces[sha256] = pieces
        while self._size > self.max_bytes:
            evicted = next(iter(self._items))
            self._drop(evicted)

    def forget(self, stack_id: str) -> None:
        """Drop the stack's texts (it was deleted). A text another stack shares stays."""
        sha256 = self._newest.pop(stack_id, None)
        self._position.pop(stack_id, None)
        if sha256 is not None and sha256 not in self._newest.values():
            self._drop(sha256)

    def _drop(self, sha256: str) -> None:
        text = self._items.pop(sha256, None)
        if text is not None:
            self._size -= len(text)
        known = self._pieces.pop(sha256, None)
        if known is not None:
            self._size -= known.cost
