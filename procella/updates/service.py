"""The update lifecycle: create, start, lease, checkpoints, events, complete, cancel.

Rules that must hold across replicas are decided in the database: the stack row lock
and a unique index allow one running update per stack; every update-token call checks
the lease against the database clock; checkpoint sequence numbers advance by
compare-and-set. Work that needs no lock (building a checkpoint text, writing its blob)
happens before the transaction, so locks are held only for a few statements.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from dataclasses import dataclass
from typing import Any

from procella import audit, lifecycle, metrics
from procella.auth.models import Principal, Role, new_lease_token, token_hash
from procella.errors import (
    BadRequest,
    Conflict,
    LeaseInvalid,
    NotFound,
    TransientStoreError,
    UpdateConflict,
)
from procella.metadata.base import MetadataStore, UniqueViolation, UpdateRecord
from procella.metadata.queries import checkpoints as checkpoint_q
from procella.metadata.queries import events as event_q
from procella.metadata.queries import journal as journal_q
from procella.metadata.queries import stacks as stack_q
from procella.metadata.queries import stats as stats_q
from procella.metadata.queries import updates as update_q
from procella.stacks.models import StackRef, check_tags
from procella.stacks.service import (
    CONFLICT_MESSAGE,
    StackService,
    free_if_abandoned,
    stack_not_found,
)
from procella.state import checkpoints as cp
from procella.state import pieces
from procella.state.journal import JournalEntry
from procella.state.states import States
from procella.updates import events as stored_events
from procella.updates import steps
from procella.updates.models import COMPLETE_STATUSES
from procella.updates.steps import StepWriter

log = logging.getLogger(__name__)

# Texts larger than this are hashed in a thread, so the event loop stays free.
OFFLOAD_HASH_BYTES = 256 * 1024


@dataclass(frozen=True)
class NewUpdate:
    """What ``POST STACK/{kind}`` carries, already validated by the API layer."""

    kind: str
    is_preview: bool
    program: dict[str, Any]
    config: dict[str, Any]
    metadata: dict[str, Any]


@dataclass(frozen=True)
class Lease:
    version: int
    token: str
    expires_at_ms: int
    journal_version: int  # 1: the CLI sends journal entries, 0: checkpoints


@dataclass(frozen=True)
class Event:
    sequence: int
    kind: str
    value: dict[str, Any]  # the event as the CLI sent it


class UpdateService:
    def __init__(
        self,
        meta: MetadataStore,
        stacks: StackService,
        states: States,
        lease_max_seconds: int,
        journaling: bool,
    ) -> None:
        self.meta = meta
        self.stacks = stacks
        self.states = states
        self.steps = StepWriter(meta, states)
        self.lease_max_seconds = lease_max_seconds
        self.journaling = journaling

    # User-token calls ------------------------------------------------------------------

    async def create(self, principal: Principal, ref: StackRef, new: NewUpdate) -> str:
        """Record a new update. It takes no lock yet: starting it does."""
        principal.require_stack(ref.org, ref.project, ref.stack, Role.MEMBER)
        async with self.meta.transaction() as conn:
            # Read under the row lock: a stack deleted meanwhile is a 404, not a dangling row.
            stack = await stack_q.get(conn, ref.org, ref.project, ref.stack, lock=True)
            if stack is None:
                raise stack_not_found(ref)
            return await update_q.insert(
                conn,
                stack.id,
                new.kind,
                is_preview=new.is_preview,
                created_by=principal.login,
                program=json.dumps(new.program, allow_nan=False),
                config=json.dumps(new.config, allow_nan=False),
                metadata=json.dumps(new.metadata, allow_nan=False),
            )

    async def start(
        self,
        principal: Principal,
        ref: StackRef,
        update_id: str,
        tags: dict[str, str] | None,
        *,
        wants_journal: bool = False,
        client_version: str = "",
    ) -> Lease:
        """Start an update. A non-preview update takes the stack or fails with a conflict.

        It journals when the CLI asked to and the server allows it.
        """
        principal.require_stack(ref.org, ref.project, ref.stack, Role.MEMBER)
        if tags is not None:
            check_tags(tags)
        journal_version = 1 if wants_journal and self.journaling else 0
        token = new_lease_token()
        async with self.meta.transaction() as conn:
            stack = await stack_q.get(conn, ref.org, ref.project, ref.stack, lock=True)
            update = await update_q.get(conn, update_id, lock=True)
            if stack is None or update is None or update.stack_id != stack.id:
                raise NotFound(f"update '{update_id}' not found")
            lifecycle.start(update.lifecycle)
            version = stack.version
            if not update.is_preview:
                if await free_if_abandoned(conn, stack.id) is not None:
                    raise UpdateConflict(CONFLICT_MESSAGE)
                version = await stack_q.next_version(conn, stack.id)
                await stack_q.set_active_update(conn, stack.id, update.id)
            try:
                expires = await update_q.start(
                    conn,
                    update.id,
                    None if update.is_preview else version,
                    token_hash(token),
                    self.lease_max_seconds * 1000,
                    journal_version=journal_version,
                    client_version=client_version,
                )
            except UniqueViolation:
                raise UpdateConflict(CONFLICT_MESSAGE) from None
            if tags is not None:
                await stack_q.replace_tags(conn, stack.id, tags)
            if not update.is_preview:  # a preview changes nothing
                await audit.record_on_stack(
                    conn,
                    stack.id,
                    principal,
                    audit.UPDATE_START,
                    f"started {update.kind} {update.id} of {ref} (version {version})",
                )
        kind = metrics.update_kind(update.kind, update.is_preview)
        metrics.UPDATES_STARTED.labels(kind).inc()
        log.info(
            "update %s started: %s of %s by %s (version %s, %s)",
            update.id,
            kind,
            ref,
            principal.login,
            version,
            "journal" if journal_version else "checkpoints",
        )
        return Lease(version, token, expires, journal_version)

    async def cancel(self, principal: Principal, ref: StackRef, update_id: str) -> None:
        """Cancel an update that has not ended; cancelling an ended one changes nothing."""
        principal.require_stack(ref.org, ref.project, ref.stack, Role.MEMBER)
        async with self.meta.transaction() as conn:
            stack = await stack_q.get(conn, ref.org, ref.project, ref.stack, lock=True)
            update = await update_q.get(conn, update_id, lock=True)
            if stack is None or update is None or update.stack_id != stack.id:
                raise NotFound(f"update '{update_id}' not found")
            cancelled = lifecycle.cancel(update.lifecycle)
            if cancelled is None:
                return  # it has ended
            await update_q.end(conn, stack.id, update.lifecycle, cancelled)
            if not update.is_preview:
                await audit.record_on_stack(
                    conn,
                    stack.id,
                    principal,
                    audit.UPDATE_CANCEL,
                    f"cancelled {update.kind} {update.id} of {ref}",
                )
        kind = metrics.update_kind(update.kind, update.is_preview)
        metrics.UPDATE_OUTCOMES.labels(kind, "aborted").inc()
        log.info("update %s cancelled by %s: %s of %s", update.id, principal.login, kind, ref)
        await self.states.settle_by_id(update.id)

    async def get(self, principal: Principal, ref: StackRef, update_id: str) -> UpdateRecord:
        stack = await self.stacks.resolve(principal, ref, Role.VIEWER)
        async with self.meta.read() as conn:
            update = await update_q.get(conn, update_id)
        if update is None or update.stack_id != stack.id:
            raise NotFound(f"update '{update_id}' not found")
        return update

    async def events(
        self, principal: Principal, ref: StackRef, update_id: str, after: int, limit: int
    ) -> tuple[UpdateRecord, list[tuple[int, str]]]:
        """A page of the update's events, each with its step states put back."""
        update = await self.get(principal, ref, update_id)
        async with self.meta.read() as conn:
            rows = await event_q.page(conn, update.id, after, limit)
            refs = {seq: stored_events.decode_refs(text) for seq, _, text in rows}
            digests = sorted({digest for found in refs.values() for _, digest in found})
            states = await event_q.states(conn, digests)
        return update, [(seq, stored_events.join(body, refs[seq], states)) for seq, body, _ in rows]

    async def history(
        self, principal: Principal, ref: StackRef, page_size: int, page: int
    ) -> list[UpdateRecord]:
        stack = await self.stacks.resolve(principal, ref, Role.VIEWER)
        async with self.meta.read() as conn:
            return await update_q.history(conn, stack.id, page_size, (page - 1) * page_size)

    async def running_counts(self) -> list[tuple[str, bool, bool, int]]:
        """``(kind, is_preview, lease live, count)`` of every running update in the
        deployment (the ``/metrics`` gauges): one grouped count."""
        async with self.meta.read() as conn:
            return await stats_q.running_updates(conn)

    # Update-token calls ----------------------------------------------------------------

    # The API checks the token before it reads a request body, so a caller without a lease
    # cannot make the server inflate and parse one; the methods below take its result.

    async def identify(self, ref: StackRef, update_id: str, token: str) -> UpdateRecord:
        """The update, if ``token`` is its lease and ``ref`` names its stack (in any status)."""
        async with self.meta.read() as conn:
            found = await update_q.get_with_ref(conn, update_id)
        return _check_token(found, ref, update_id, token)

    async def authorize(self, ref: StackRef, update_id: str, token: str) -> UpdateRecord:
        """The update, if ``token`` is its lease, still live, and ``ref`` names its stack."""
        update = await self.identify(ref, update_id, token)
        lifecycle.check_live(update.lifecycle)
        return update

    async def renew(self, update: UpdateRecord, token: str, duration: int) -> int:
        """Extend the lease by ``duration`` seconds (capped); returns the new expiry."""
        lifecycle.renew(update.lifecycle)
        seconds = max(1, min(duration, self.lease_max_seconds))
        async with self.meta.transaction() as conn:
            expires = await update_q.renew_lease(conn, update.id, token_hash(token), seconds * 1000)
        metrics.LEASE_RENEWALS.labels("refused" if expires is None else "renewed").inc()
        if expires is None:  # it ended or expired since it was read
            raise LeaseInvalid(lifecycle.LEASE_ENDED)
        return expires

    async def save_full(
        self, update: UpdateRecord, token: str, text: bytes, check: pieces.TextCheck | None
    ) -> None:
        """``PATCH checkpoint``: a whole deployment, no sequence number (idempotent).
        ``check``: what the text must pass before it is stored (None: it passed already)."""
        _check_checkpointing(update)
        digest = await _sha256(text)
        if digest == update.checkpoint_sha:
            return  # a retry, or a step that changed nothing
        stored = await self.steps.store(update, token, text, digest, check=check)
        metrics.STEP_BYTES.labels("whole").observe(stored)

    async def save_verbatim(
        self,
        update: UpdateRecord,
        token: str,
        sequence: int,
        text: bytes,
        check: pieces.TextCheck | None,
    ) -> None:
        """``PATCH checkpointverbatim``: the exact text, numbered from 1 in each update."""
        _check_checkpointing(update)
        digest = await _sha256(text)
        retry = sequence == update.checkpoint_seq and digest == update.checkpoint_sha
        if check is not None and not retry and sequence != update.checkpoint_seq + 1:
            # Out of turn: a text that is no deployment is still a 400 before it is a 409.
            await asyncio.to_thread(steps.check_alone, text, check)
        if lifecycle.checkpoint(update.lifecycle, sequence, digest) is None:
            return  # a retry of the last saved step
        stored = await self.steps.store(update, token, text, digest, check=check)
        metrics.STEP_BYTES.labels("whole").observe(stored)

    async def save_delta(
        self,
        update: UpdateRecord,
        token: str,
        sequence: int,
        digest: str,
        edits: list[cp.TextEdit],
    ) -> None:
        """``PATCH checkpointdelta``: edits to this update's previous text, and its hash.

        The hash proves the text is what the client meant; the text is parsed only when the
        update completes (``StepWriter.finish``). Any failure here is safe: the CLI then
        resends the same step verbatim.
        """
        _check_checkpointing(update)
        if lifecycle.checkpoint(update.lifecycle, sequence, digest) is None:
            return  # a retry of the last saved step
        if update.checkpoint_seq == 0 or update.checkpoint_sha is None:
            raise BadRequest("no previous checkpoint in this update to apply a delta to")
        prev = await self.steps.previous_text(update)
        text = await asyncio.to_thread(cp.apply_text_edits, prev, edits)
        actual = await asyncio.to_thread(cp.sha256_hex, text)
        if actual != digest:
            raise BadRequest(f"checkpoint hash mismatch: expected {digest}, got {actual}")
        stored = await self.steps.store(update, token, text, digest, edits)
        metrics.STEP_BYTES.labels("delta").observe(stored)

    async def save_journal(
        self, update: UpdateRecord, token: str, entries: list[JournalEntry]
    ) -> None:
        """``PATCH journalentries``: store a batch durably, in arrival order.

        An entry is stored once under its sequence ID: a retried batch changes nothing, and
        an entry that comes back with other contents is a conflict that stores nothing.
        """
        if update.is_preview:
            raise BadRequest("a preview has no journal")
        if update.journal_version != 1:
            raise BadRequest("this update sends checkpoints, not journal entries")
        batch: dict[int, journal_q.StoredEntry] = {}
        bodies = await self.states.stored_bodies(update, entries)
        for entry, body in zip(entries, bodies, strict=True):
            stored = journal_q.StoredEntry(entry.sequence_id, entry.kind, body)
            if batch.setdefault(entry.sequence_id, stored).body != stored.body:
                raise BadRequest(f"the batch holds sequence ID {entry.sequence_id} twice")
        async with self.meta.transaction() as conn:
            count = await journal_q.lock_live(conn, update.id, token_hash(token))
            if count is None:
                raise LeaseInvalid(lifecycle.LEASE_ENDED)
            known = await journal_q.bodies(conn, update.id, list(batch))
            for sequence_id, body in known.items():
                if batch[sequence_id].body != body:
                    raise Conflict(
                        f"journal entry {sequence_id} was stored before with other contents"
                    )
            new = [e for e in batch.values() if e.sequence_id not in known]
            await journal_q.append(conn, update.id, count, new)
        metrics.STEP_BYTES.labels("journal").observe(sum(len(e.body) for e in new))

    async def record_events(self, update: UpdateRecord, events: list[Event]) -> None:
        """Store a batch of engine events, their step states apart (``updates.events``)."""
        splits = await asyncio.to_thread(_split_events, events)
        rows = [
            event_q.StoredEvent(e.sequence, e.kind, s.body, stored_events.encode_refs(s.refs))
            for e, s in zip(events, splits, strict=True)
        ]
        states = {digest: text for s in splits for digest, text in s.states.items()}
        for attempt in range(2):
            try:
                async with self.meta.transaction() as conn:
                    await event_q.insert_many(conn, update.stack_id, update.id, rows, states)
                return
            except NotFound:
                # A state the GC collected between our read and our reference (it had been
                # unreferenced): once more, which stores it again.
                if attempt:
                    raise

    async def complete(self, update: UpdateRecord, status: str) -> None:
        """End the update, release the stack and record its results. Retries succeed.

        ``update`` comes from ``identify``: a retry arrives after the update has ended.
        """
        final = COMPLETE_STATUSES.get(status)
        if final is None:
            raise BadRequest(f"invalid status {status!r}: use succeeded, failed or cancelled")
        if lifecycle.complete(update.lifecycle, final) is None:
            return  # a retry
        changes, count = await self._results(update)
        journaled = recounted = None
        if update.journal_version == 1 and not update.is_preview:
            journaled = await self.states.materialize(update)
            count = journaled.resource_count
        elif not update.is_preview:
            recounted = (await self.steps.finish(update)).resource_count
            count = count if recounted is None else recounted
        async with self.meta.transaction() as conn:
            # Stack row first, then the update's: the order start and cancel lock them in.
            await stack_q.get_by_id(conn, update.stack_id, lock=True)
            locked = await update_q.get(conn, update.id, lock=True)
            if locked is None:  # its stack was deleted meanwhile
                raise NotFound(f"update '{update.id}' not found")
            completed = lifecycle.complete_locked(locked.lifecycle, final)
            if completed is None:
                return  # a retry that raced this one
            if journaled is not None:
                if locked.journal_count != journaled.entries:
                    # A batch landed after the replay read the journal: replay again.
                    raise TransientStoreError(
                        "the journal changed while it was replayed", cause="journal_changed"
                    )
                await journaled.save(conn, locked)
            elif recounted is not None:
                assert locked.version is not None
                await checkpoint_q.set_resource_count(
                    conn, locked.stack_id, locked.version, recounted
                )
            await update_q.end(
                conn,
                update.stack_id,
                locked.lifecycle,
                completed,
                resource_changes=changes,
                resource_count=count,
            )
            if not update.is_preview:
                await stack_q.record_update_time(conn, update.stack_id)
                await audit.record_on_stack(
                    conn,
                    update.stack_id,
                    update.created_by,
                    audit.UPDATE_COMPLETE,
                    f"{update.kind} {update.id} {final}: {count} resources",
                )
        kind = metrics.update_kind(update.kind, update.is_preview)
        metrics.UPDATE_OUTCOMES.labels(kind, final).inc()
        log.info("update %s %s: %s, %s resources", update.id, final, kind, count)

    async def _results(self, update: UpdateRecord) -> tuple[str | None, int | None]:
        """The update's resource changes (from its summary event) and the resources in
        the stack's state after it."""
        async with self.meta.read() as conn:
            summary = await event_q.last_of_kind(conn, update.id, "summaryEvent")
            state = None
            if not update.is_preview and update.version is not None:
                state = await checkpoint_q.latest_summary(
                    conn, update.stack_id, at_most=update.version
                )
        changes = None
        if summary is not None:  # validated when it was recorded (api/updates.py)
            counts = json.loads(summary)["summaryEvent"].get("resourceChanges")
            changes = None if counts is None else json.dumps(counts)
        return changes, None if state is None else state.resource_count


async def _sha256(text: bytes) -> str:
    if len(text) > OFFLOAD_HASH_BYTES:
        return await asyncio.to_thread(cp.sha256_hex, text)
    return cp.sha256_hex(text)


def _check_checkpointing(update: UpdateRecord) -> None:
    if update.is_preview:
        raise BadRequest("a preview has no checkpoints")
    if update.journal_version == 1:
        raise BadRequest("this update sends journal entries, not checkpoints")


def _check_token(
    found: tuple[UpdateRecord, tuple[str, str, str]] | None,
    ref: StackRef,
    update_id: str,
    token: str,
) -> UpdateRecord:
    """The update if ``token`` is its lease and ``ref`` names its stack; lease liveness
    is the caller's business."""
    if found is None:
        raise NotFound(f"update '{update_id}' not found")
    update, (org, project, stack) = found
    if StackRef(org, project, stack) != ref:
        raise LeaseInvalid("the update token does not belong to this stack")
    if update.lease_hash is None or not hmac.compare_digest(update.lease_hash, token_hash(token)):
        raise LeaseInvalid("the update token does not belong to this update")
    return update


def _split_events(events: list[Event]) -> list[stored_events.Split]:
    return [stored_events.split(e.value, e.kind) for e in events]
