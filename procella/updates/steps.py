"""Storing checkpoint steps as what changed, and settling them when the update completes.

A step stores its delta from the previous text: the CLI's own edits for a delta checkpoint,
or edits the server finds (``procella.state.deltas``) for a whole one and for the first
step of an update, whose previous text is the version before's. Rebuilding a text costs
its full text plus the deltas since, so once those deltas outweigh the text (``chain``
bytes), the step stores a full text instead (compaction) and the one it supersedes, with
its deltas, is deleted at once. Work per step is O(change) in bytes written; the full text
is hashed and compared, and a whole checkpoint is parsed only where it changed
(``procella.state.pieces``); a delta's text is not parsed at all. ``finish`` parses the
final text once, at the end of the update, to count its resources and prove it is a
deployment.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from procella import lifecycle, strictjson
from procella.auth.models import token_hash
from procella.errors import BadRequest, Conflict, NotFound
from procella.metadata.base import Connection, MetadataStore, UpdateRecord
from procella.metadata.queries import checkpoints as checkpoint_q
from procella.metadata.queries import updates as update_q
from procella.state import checkpoints as cp
from procella.state import deltas, pieces
from procella.state.states import States

# Compact when rebuilding would read more delta bytes than this many texts' worth; at
# complete, a lower bar, so the next update starts from a short chain.
STEP_CHAIN_RATIO = 2
FINISH_CHAIN_RATIO = 0.5
# Small states are cheap to store whole; a chain shorter than this never compacts.
MIN_CHAIN_BYTES = 64 * 1024


@dataclass(frozen=True)
class Finished:
    resource_count: int | None  # None: the update stored no checkpoint


class StepWriter:
    def __init__(self, meta: MetadataStore, states: States) -> None:
        self.meta = meta
        self.states = states
        self.texts = states.texts

    async def previous_text(self, update: UpdateRecord) -> bytes:
        """The text of the update's last saved step (whose hash the update row holds)."""
        assert update.checkpoint_sha is not None and update.version is not None
        cached = self.texts.cache.get(update.checkpoint_sha)
        if cached is not None:
            return cached
        async with self.meta.read() as conn:
            row = await checkpoint_q.get(conn, update.stack_id, update.version)
        if row is None or row.sha256 != update.checkpoint_sha:
            raise Conflict("the previous checkpoint changed; send it whole")
        return await self.states.load(row)

    async def store(
        self,
        update: UpdateRecord,
        token: str,
        text: bytes,
        digest: str,
        edits: list[cp.TextEdit] | None = None,
        check: pieces.TextCheck | None = None,
    ) -> int:
        """Store ``text`` (hash ``digest``) as the update's next step. ``edits`` turn the
        previous step's text into it, when the caller has them. ``check``: what the text
        must pass first (``pieces.check``, in pieces where the previous text was checked
        so on this replica); None when it passed already or is not parsed per step (a
        delta's text: ``finish`` parses it). Returns the bytes stored: the encoded delta,
        or the full text when the step compacted."""
        assert update.version is not None
        seq = update.checkpoint_seq + 1
        step, checked = await self._step(update, text, digest, seq, edits, check)
        async with self.meta.single_write() as conn:
            saved, superseded = await checkpoint_q.save_step(conn, update, token_hash(token), step)
            if not saved:
                await _explain_lost_race(conn, update.id, seq, digest)
        # The stack's newest text, and where it is: the next step's previous text here, and
        # on another replica the text it catches up from (``States.load``).
        self.texts.cache.put(digest, text, update.stack_id, (update.version, seq), checked)
        if superseded is not None:
            await self.texts.delete(superseded)
        return step.size if step.edits is None else len(step.edits)

    async def _step(
        self,
        update: UpdateRecord,
        text: bytes,
        digest: str,
        seq: int,
        edits: list[cp.TextEdit] | None,
        check: pieces.TextCheck | None,
    ) -> tuple[checkpoint_q.Step, pieces.Pieces | None]:
        assert update.version is not None
        base_version, chain, count = None, update.checkpoint_chain, 0
        checked = None
        if update.checkpoint_seq == 0:
            # The first step of the update: its delta is from the version before's text.
            async with self.meta.read() as conn:
                base = await checkpoint_q.latest(conn, update.stack_id, at_most=update.version - 1)
            if base is None:
                _, checked = await asyncio.to_thread(_diff_and_check, None, text, None, check)
                return await self._full(update, text, digest, seq, 0), checked
            prev = await self.states.load(base)
            edits, checked = await asyncio.to_thread(
                _diff_and_check, prev, text, self.texts.cache.pieces(base.sha256), check
            )
            base_version, chain, count = base.version, base.chain_bytes, base.resource_count
        elif edits is None:
            assert update.checkpoint_sha is not None
            prev = await self.previous_text(update)
            edits, checked = await asyncio.to_thread(
                _diff_and_check, prev, text, self.texts.cache.pieces(update.checkpoint_sha), check
            )
        assert edits is not None
        encoded = deltas.encode(edits)
        chain += len(encoded)
        if chain > max(STEP_CHAIN_RATIO * len(text), MIN_CHAIN_BYTES):
            return await self._full(update, text, digest, seq, count), checked
        step = checkpoint_q.Step(
            seq, digest, len(text), chain, count, edits=encoded, base_version=base_version
        )
        return step, checked

    async def _full(
        self, update: UpdateRecord, text: bytes, digest: str, seq: int, count: int
    ) -> checkpoint_q.Step:
        stored = await self.texts.store(update.stack_id, text, digest)
        return checkpoint_q.Step(seq, digest, len(text), 0, count, text=stored)

    async def finish(self, update: UpdateRecord) -> Finished:
        """At complete: count the final state's resources (proving it is a deployment),
        and compact it if its chain is long."""
        assert update.version is not None
        async with self.meta.read() as conn:
            row = await checkpoint_q.get(conn, update.stack_id, update.version)
        if row is None:
            return Finished(None)
        text = await self.states.load(row)
        try:
            # Strictly: a delta is hash-checked, not parsed, so this is where a text a
            # client hashed with NaN, 1e400 or absurd nesting in it is caught.
            parsed = await asyncio.to_thread(strictjson.loads, text)
            state = cp.state_of(text, parsed)
        except (ValueError, RecursionError, BadRequest) as exc:
            raise BadRequest(f"the update's last checkpoint is not a deployment: {exc}") from None
        if row.chain_bytes > max(FINISH_CHAIN_RATIO * len(text), MIN_CHAIN_BYTES):
            stored = await self.texts.store(update.stack_id, text, row.sha256)
            async with self.meta.transaction() as conn:
                superseded = await checkpoint_q.compact(conn, row, stored)
            if superseded is not None:
                await self.texts.delete(superseded)
        return Finished(state.resource_count)


def _diff_and_check(
    prev: bytes | None,
    text: bytes,
    prev_pieces: pieces.Pieces | None,
    check: pieces.TextCheck | None,
) -> tuple[list[cp.TextEdit] | None, pieces.Pieces | None]:
    """The edits from ``prev`` to ``text`` (None without ``prev``), and ``text`` checked by
    ``check`` (raises BadRequest) in pieces where ``prev_pieces`` and the edits allow."""
    cuts = deltas.cuts(text)
    edits = None
    if prev is not None:
        prev_cuts = deltas.cuts(prev) if prev_pieces is None else prev_pieces.cuts
        edits = deltas.diff_at(prev, text, prev_cuts, cuts)
    if check is None:
        return edits, None
    skeleton, checked = pieces.check(text, check.max_depth, prev_pieces, edits, cuts, check.members)
    check.schema(skeleton)
    return edits, checked


def check_alone(text: bytes, check: pieces.TextCheck) -> None:
    """``check`` on ``text`` with nothing known of a previous text (raises BadRequest)."""
    _diff_and_check(None, text, None, check)


async def _explain_lost_race(conn: Connection, update_id: str, seq: int, digest: str) -> None:
    """After a failed compare-and-set: succeed if a concurrent retry stored the same step,
    else say why the write was refused."""
    now = await update_q.get(conn, update_id)
    if now is None:  # its stack was deleted meanwhile
        raise NotFound(f"update '{update_id}' not found")
    lifecycle.check_live(now.lifecycle)
    if now.checkpoint_seq == seq and now.checkpoint_sha == digest:
        return
    raise Conflict(
        f"checkpoint {seq} lost a race with another write; the next one is {now.checkpoint_seq + 1}"
    )
