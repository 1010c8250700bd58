"""A stack's state at any version, whether its updates sent checkpoints or journal entries.

A checkpointing update leaves a checkpoint row per stack version. A journaling update
leaves entries, and its state is its base (the state of the version before it) with the
entries replayed as the CLI replays them (``procella.updates.journal``). That state is
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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from procella.errors import Conflict
from procella.metadata.base import MetadataStore, UpdateRecord
from procella.metadata.queries import checkpoints as checkpoint_q
from procella.metadata.queries import journal as journal_q
from procella.metadata.queries import updates as update_q
from procella.updates import checkpoints as cp
from procella.updates import journal
from procella.updates.texts import CheckpointTexts, StoredText

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StateText:
    text: bytes
    resource_count: int


@dataclass(frozen=True)
class Materialized:
    """A journaling update's state, stored in the text stores, ready for its row."""

    stored: StoredText
    resource_count: int
    entries: int  # how many journal entries it replays


class States:
    def __init__(self, meta: MetadataStore, texts: CheckpointTexts) -> None:
        self.meta = meta
        self.texts = texts

    async def text(self, stack_id: str, at_most: int | None = None) -> StateText:
        """The stack's current state (or as of version ``at_most``)."""
        async with self.meta.read() as conn:
            row = await checkpoint_q.latest(conn, stack_id, at_most=at_most)
            after = -1 if row is None else row.version
            pending = await journal_q.unmaterialized(conn, stack_id, after, at_most)
        if row is None:
            state = StateText(cp.EMPTY_DEPLOYMENT, 0)
        else:
            state = StateText(await self.texts.load(row), row.resource_count)
        for update_id in pending:
            async with self.meta.read() as conn:
                update = await update_q.get(conn, update_id)
                bodies = await journal_q.entries(conn, update_id)
            if update is not None:
                state = await asyncio.to_thread(_replay, state.text, bodies, update)
        return state

    async def resource_count(self, stack_id: str) -> int:
        """Resources in the stack's current state; reads no text unless a journal is open."""
        async with self.meta.read() as conn:
            row = await checkpoint_q.latest_summary(conn, stack_id)
            after = -1 if row is None else row.version
            pending = await journal_q.unmaterialized(conn, stack_id, after, None)
        if not pending:
            return 0 if row is None else row.resource_count
        return (await self.text(stack_id)).resource_count

    async def materialize(self, update: UpdateRecord) -> Materialized:
        """Replay the update's journal onto its base state and store the resulting text."""
        assert update.version is not None, "only started, non-preview updates have a journal"
        base = await self.text(update.stack_id, at_most=update.version - 1)
        async with self.meta.read() as conn:
            bodies = await journal_q.entries(conn, update.id)
        state = await asyncio.to_thread(_replay, base.text, bodies, update)
        stored = await self.texts.store(update.stack_id, state.text)
        return Materialized(stored, state.resource_count, len(bodies))

    async def settle(self, update: UpdateRecord) -> None:
        """Store a frozen journal's state unless it is stored already."""
        if update.journal_version != 1 or update.is_preview or update.version is None:
            return
        if not update.journal_frozen:
            return
        done = await self.materialize(update)
        async with self.meta.transaction() as conn:
            await checkpoint_q.put_new(
                conn, update.stack_id, update.version, update.id, done.stored, done.resource_count
            )

    async def settle_stack(self, stack_id: str) -> None:
        """Store the state of every frozen journal of the stack that is not stored yet, so
        that its checkpoint rows alone say what its current state is."""
        async with self.meta.read() as conn:
            pending = await journal_q.unmaterialized(conn, stack_id, -1, None)
        for update_id in pending:
            async with self.meta.read() as conn:
                update = await update_q.get(conn, update_id)
            if update is not None:
                await self.settle(update)

    async def settle_by_id(self, update_id: str) -> None:
        """``settle``, best effort: on failure the state is still replayed by readers, and
        the garbage collector stores it later."""
        try:
            async with self.meta.read() as conn:
                update = await update_q.get(conn, update_id)
            if update is not None:
                await self.settle(update)
        except Exception:
            log.warning("storing the state of update %s failed; the GC retries", update_id)


def _replay(base_text: bytes, bodies: list[bytes], update: UpdateRecord) -> StateText:
    """The state after replaying ``bodies`` (JSON entries, in order) onto ``base_text``."""
    base = cp.parse_deployment(base_text).get("deployment")
    millis = update.journal_last_at or update.started_at or update.created_at
    manifest = journal.make_manifest(_rfc3339(millis), update.client_version)
    try:
        replayer = journal.Replayer(base if isinstance(base, dict) else None)
        for body in bodies:
            replayer.add(_stored_entry(json.loads(body)))
        version, features, deployment = replayer.generate(manifest)
    except journal.ReplayError as exc:
        # Go's replayer refuses these too (e.g. two resources claiming one alias).
        raise Conflict(f"the journal of update {update.id} cannot be replayed: {exc}") from None
    resources = deployment.get("resources")
    count = len(resources) if isinstance(resources, list) else 0
    return StateText(journal.wrapper_text(version, features, deployment), count)


def _stored_entry(body: dict[str, Any]) -> journal.JournalEntry:
    """An entry as stored: it passed ``journal.check_entry`` when it arrived."""
    return journal.JournalEntry(
        journal.Kind(body["kind"]), body["sequenceID"], body["operationID"], body
    )


def _rfc3339(millis: int) -> str:
    moment = datetime.fromtimestamp(millis / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
