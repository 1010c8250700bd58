"""A stack's state at any version, whether its updates sent checkpoints or journal entries.

A checkpointing update leaves a checkpoint row per stack version, whose text is a full
text or a chain of deltas from another version's (``CheckpointRecord``); ``load`` rebuilds
it. A journaling update
leaves entries, and its state is its base (the state of the version before it) with the
entries replayed as the CLI replays them (``procella.state.journal``). That state is
*materialised* — stored once as the version's checkpoint row — when the update completes,
when it is cancelled, or by the garbage collector; until then every reader replays it, so
any replica sees the same state and nothing lives in one replica's memory.

A journal is *frozen* once its update ended or its lease expired (an expired lease is
never renewed and accepts no entry), so replaying a frozen journal always gives the same
text: the manifest's time is that of the last stored batch, not the time of the replay.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
from dataclasses import dataclass
from datetime import UTC, datetime

from procella import strictjson
from procella.blobs.base import BlobNotFound
from procella.errors import BadRequest, Conflict, NotFound, TransientStoreError
from procella.metadata.base import CheckpointRecord, Connection, MetadataStore, UpdateRecord
from procella.metadata.queries import checkpoints as checkpoint_q
from procella.metadata.queries import journal as journal_q
from procella.metadata.queries import updates as update_q
from procella.state import checkpoints as cp
from procella.state import deltas, journal, pieces, text_resources
from procella.state.journal import JournalEntry
from procella.state.text_resources import compact_json
from procella.state.texts import CheckpointTexts, StoredText

log = logging.getLogger(__name__)


_READ_ATTEMPTS = 3
# A journal's state is stored as a delta unless the chain behind it is longer than this or
# half the text.
MIN_DELTA_CHAIN = 64 * 1024
# ... and at most this many deltas of versions follow a full text: each costs a reader that
# does not hold the text a query, an apply and a SHA-256 of the whole text, however small
# the delta (an assembly of a change to a large stack is a few KB).
MAX_DELTA_LINKS = 8
# Journal entries read per query when a journal is replayed (a few MB of a large stack's).
_ENTRY_PAGE = 256
# Updates whose base digests a replica keeps (32 bytes per resource each).
_DIGEST_CACHE_UPDATES = 16


class _Moved(Exception):
    """A row's text changed while it was read: read the row again."""


@dataclass(frozen=True)
class StateText:
    text: bytes
    resource_count: int


@dataclass(frozen=True)
class Materialized:
    """A journaling update's state, ready for its checkpoint row: a full text stored in the
    text stores, or a delta from the base version's text."""

    stored: StoredText | None
    delta: checkpoint_q.Step | None
    resource_count: int
    entries: int  # how many journal entries it replays

    async def save(self, conn: Connection, update: UpdateRecord) -> None:
        assert update.version is not None
        if self.delta is not None:
            await checkpoint_q.put_delta(
                conn, update.stack_id, update.version, update.id, self.delta
            )
        else:
            assert self.stored is not None
            await checkpoint_q.put(
                conn, update.stack_id, update.version, update.id, self.stored, self.resource_count
            )


class States:
    def __init__(self, meta: MetadataStore, texts: CheckpointTexts) -> None:
        self.meta = meta
        self.texts = texts
        self._digests: dict[str, list[bytes]] = {}  # update id -> base_digests, oldest first

    async def text(self, stack_id: str, at_most: int | None = None) -> StateText:
        """The stack's current state (or as of version ``at_most``)."""
        _, state, _ = await self._state_at(stack_id, at_most)
        return state

    async def _state_at(
        self, stack_id: str, at_most: int | None
    ) -> tuple[CheckpointRecord | None, StateText, bool]:
        """The state, the newest checkpoint row it starts from, and whether journals not
        stored yet were replayed on top of that row."""
        async with self.meta.read() as conn:
            row = await checkpoint_q.latest(conn, stack_id, at_most=at_most)
            after = -1 if row is None else row.version
            pending = await journal_q.unmaterialized(conn, stack_id, after, at_most)
        if row is None:
            state = StateText(cp.EMPTY_DEPLOYMENT, 0)
        else:
            state = StateText(await self.load(row), row.resource_count)
        for update_id in pending:
            async with self.meta.read() as conn:
                update = await update_q.get(conn, update_id)
            if update is not None:
                state, _ = await self._replay(state.text, update)
        return row, state, bool(pending)

    async def stored_bodies(self, update: UpdateRecord, entries: list[JournalEntry]) -> list[bytes]:
        """The entries as stored: compact JSON, deterministic (a retried batch compares
        equal), with the states of ``same`` steps replaced by references to the base
        state's resources (``journal.elide_unchanged``)."""
        digests: list[bytes] = []
        if any(_may_elide(entry) for entry in entries):
            digests = await self._base_digests(update)
        return [compact_json(journal.elide_unchanged(e.body, digests)) for e in entries]

    async def _base_digests(self, update: UpdateRecord) -> list[bytes]:
        """The digests of the update's base resources, from a small per-replica cache; a
        miss (another replica served the update so far) rebuilds them from the state."""
        digests = self._digests.get(update.id)
        if digests is None:
            assert update.version is not None
            _, base, _ = await self._state_at(update.stack_id, update.version - 1)
            digests = await asyncio.to_thread(text_resources.base_digests, base.text)
            self._digests[update.id] = digests
            while len(self._digests) > _DIGEST_CACHE_UPDATES:
                self._digests.pop(next(iter(self._digests)))
        return digests

    async def _replay(self, base_text: bytes, update: UpdateRecord) -> tuple[StateText, int]:
        """The state after replaying the update's journal onto ``base_text``, and how many
        entries it replayed. Entries are read a page at a time, so only the state being
        built is held, not every entry."""
        try:
            replayer = await asyncio.to_thread(_replayer, base_text)
            after, count = -1, 0
            while True:
                async with self.meta.read() as conn:
                    page = await journal_q.entries(conn, update.id, after, _ENTRY_PAGE)
                if not page:
                    break
                await asyncio.to_thread(_add_entries, replayer, [body for _, body in page])
                after, count = page[-1][0], count + len(page)
            return await asyncio.to_thread(_generate, replayer, update), count
        except journal.ReplayError as exc:
            # Go's replayer refuses these too (e.g. two resources claiming one alias).
            raise Conflict(f"the journal of update {update.id} cannot be replayed: {exc}") from None

    async def load(self, record: CheckpointRecord) -> bytes:
        """The text of a checkpoint row: its full text or its base's, with its deltas.

        Reads are optimistic: an update may compact the row meanwhile (a new full text,
        its deltas and the superseded blob deleted), so a read that finds a piece missing
        reads the row again.
        """
        for _ in range(_READ_ATTEMPTS - 1):
            try:
                return await self._load_once(record)
            except _Moved:
                async with self.meta.read() as conn:
                    again = await checkpoint_q.get(conn, record.stack_id, record.version)
                if again is None:
                    raise NotFound(f"the state of version {record.version} is gone") from None
                record = again
        try:
            return await self._load_once(record)
        except _Moved:
            # Compacted under every read (or a text that no longer matches its digest): the
            # request can be retried as a whole, and must not end as a 500.
            raise TransientStoreError(
                f"the state of version {record.version} changed while it was read; retry",
                cause="state_moved",
            ) from None

    async def _load_once(self, record: CheckpointRecord) -> bytes:
        cached = self.texts.cache.get(record.sha256)
        if cached is not None:
            return cached
        caught_up = await self._catch_up(record)
        if caught_up is not None:
            return caught_up
        if record.base_version is None:
            try:
                base = await self.texts.load_full(record)
            except BlobNotFound:
                raise _Moved() from None
        else:
            async with self.meta.read() as conn:
                base_row = await checkpoint_q.get(conn, record.stack_id, record.base_version)
            if base_row is None:
                raise RuntimeError(f"checkpoint {record.version} lost its base version")
            base = await self.load(base_row)
        after = record.full_seq if record.base_version is None else 0
        text = base
        if record.seq > after:
            async with self.meta.read() as conn:
                stored = await checkpoint_q.deltas(
                    conn, record.stack_id, record.version, after, record.seq
                )
            if len(stored) != record.seq - after:
                raise _Moved()
            chain = [deltas.decode(d) for d in stored]
            text = await asyncio.to_thread(deltas.apply_chain, base, chain)
        if await asyncio.to_thread(cp.sha256_hex, text) != record.sha256:
            raise _Moved()
        self.texts.cache.put(record.sha256, text, record.stack_id, (record.version, record.seq))
        return text

    async def _catch_up(self, record: CheckpointRecord) -> bytes | None:
        """The row's text from this replica's newest text of the stack, when that is an
        earlier step of the same version whose later deltas are all still stored: only
        those deltas are read and applied. None when it is not (or the result's hash
        says otherwise): the caller rebuilds the text from its base."""
        cached = self.texts.cache.newest(record.stack_id)
        if cached is None:
            return None
        version, seq, text, known = cached
        # Deltas after a full text apply to it; a compaction deleted those before it.
        first = record.full_seq if record.base_version is None else 0
        if version != record.version or not first <= seq < record.seq:
            return None
        async with self.meta.read() as conn:
            stored = await checkpoint_q.deltas(
                conn, record.stack_id, record.version, seq, record.seq
            )
        if len(stored) != record.seq - seq:
            return None
        try:
            chain = [deltas.decode(d) for d in stored]
            text = await asyncio.to_thread(deltas.apply_chain, text, chain)
        except (ValueError, struct.error):
            return None
        if await asyncio.to_thread(cp.sha256_hex, text) != record.sha256:
            return None
        if known is not None:
            # What this replica validated of its text, moved through the steps it missed.
            known = await asyncio.to_thread(_carry, known, chain, text)
        position = (record.version, record.seq)
        self.texts.cache.put(record.sha256, text, record.stack_id, position, known)
        return text

    async def materialize(self, update: UpdateRecord) -> Materialized:
        """Replay the update's journal onto its base state; store the result as its delta
        from the base's checkpoint row, or whole when there is no such row (or the chain
        of deltas behind it is long already)."""
        assert update.version is not None, "only started, non-preview updates have a journal"
        row, base, overlaid = await self._state_at(update.stack_id, update.version - 1)
        state, entries = await self._replay(base.text, update)
        digest = cp.sha256_hex(state.text)
        if row is not None and not overlaid:
            assembly = await asyncio.to_thread(deltas.assemble, base.text, state.text)
            edits = deltas.encode(assembly)
            limit = max(len(state.text) // 2, MIN_DELTA_CHAIN)
            chain = row.chain_bytes + max(len(edits), limit // MAX_DELTA_LINKS)
            if chain <= limit:
                self.texts.cache.put(digest, state.text, update.stack_id)
                step = checkpoint_q.Step(
                    1, digest, len(state.text), chain, state.resource_count, edits, row.version
                )
                return Materialized(None, step, state.resource_count, entries)
        stored = await self.texts.store(update.stack_id, state.text, digest)
        return Materialized(stored, None, state.resource_count, entries)

    async def settle(self, update: UpdateRecord) -> None:
        """Make a frozen update's checkpoint row say what its final state is: store a
        journal's state unless it is stored, recount a checkpointing update's resources
        (steps do not count them, ``complete`` does; a cancelled update never completes)."""
        if update.is_preview or update.version is None or not update.frozen:
            return
        if update.resource_count is not None:
            return  # settled already (complete, or an earlier settle)
        async with self.meta.read() as conn:
            row = await checkpoint_q.get(conn, update.stack_id, update.version)
        count = None
        if update.journal_version == 1 and row is None:
            done = await self.materialize(update)
            async with self.meta.transaction() as conn:
                if await checkpoint_q.get(conn, update.stack_id, update.version) is None:
                    await done.save(conn, update)
            count = done.resource_count
        elif row is not None:
            count = await asyncio.to_thread(_count_resources, await self.load(row))
        async with self.meta.transaction() as conn:
            if count is not None and row is not None and update.journal_version != 1:
                await checkpoint_q.set_resource_count(conn, row.stack_id, row.version, count)
            await update_q.set_resource_count(conn, update.id, count)

    async def settle_stack(self, stack_id: str) -> None:
        """Settle every frozen update of the stack that is not settled yet, so that its
        checkpoint rows alone say what its current state is."""
        async with self.meta.read() as conn:
            pending = await update_q.unsettled(conn, stack_id, None)
        for update_id in pending:
            await self._settle_id(update_id)

    async def settle_by_id(self, update_id: str) -> None:
        """``settle``, best effort: on failure readers still replay a journal, and the
        garbage collector settles the update later."""
        try:
            await self._settle_id(update_id)
        except Exception:
            log.warning("settling update %s failed; the GC retries", update_id)

    async def _settle_id(self, update_id: str) -> None:
        async with self.meta.read() as conn:
            update = await update_q.get(conn, update_id)
        if update is not None:
            await self.settle(update)


def _count_resources(text: bytes) -> int | None:
    """The resources of a stored text; None if it is not a deployment (a client hashed a
    broken text and then died before `complete` could refuse it)."""
    try:
        return cp.state_of(text, strictjson.loads(text)).resource_count
    except (ValueError, RecursionError, BadRequest):
        return None


def _carry(known: pieces.Pieces, chain: list[deltas.Delta], text: bytes) -> pieces.Pieces | None:
    for delta in chain:
        if isinstance(delta, deltas.Assembly):
            return None  # a rebuilt journal state: not a step whose pieces were validated
        known = pieces.carry(known, delta, [])
    return pieces.Pieces(known.level, known.spans, deltas.cuts(text))


def _replayer(base_text: bytes) -> journal.Replayer:
    return journal.Replayer(text_resources.read_deployment(base_text))


def _add_entries(replayer: journal.Replayer, bodies: list[bytes]) -> None:
    for body in bodies:
        replayer.add_stored(json.loads(body))


def _generate(replayer: journal.Replayer, update: UpdateRecord) -> StateText:
    millis = update.journal_last_at or update.started_at or update.created_at
    manifest = journal.make_manifest(_rfc3339(millis), update.client_version)
    return StateText(*journal.generate_text(replayer, manifest))


def _rfc3339(millis: int) -> str:
    moment = datetime.fromtimestamp(millis / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _may_elide(entry: JournalEntry) -> bool:
    body = entry.body
    return entry.kind is journal.Kind.SUCCESS and body.get("removeOld") is not None
