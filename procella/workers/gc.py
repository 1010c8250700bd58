"""Garbage collection: one cycle is a testable function; the loop lives in the supervisor.

A cycle cancels updates whose lease expired (after a grace period), expires updates
created but never started, settles updates that ended without completing (stores a
journal's state, counts the resources) and deletes the entries of journals whose state is
stored, deletes engine events past their retention and the step states no event refers to
any more, deletes audit log entries past theirs, and deletes checkpoint blobs that no row
references once they are older than a grace period (a blob is written before its row, so
a younger one may belong to a write in flight).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass

from procella import audit, lifecycle, metrics
from procella.blobs.base import BlobStore
from procella.errors import NotFound
from procella.metadata.base import MetadataStore
from procella.metadata.queries import audit as audit_q
from procella.metadata.queries import checkpoints as checkpoint_q
from procella.metadata.queries import gc as gc_q
from procella.metadata.queries import journal as journal_q
from procella.metadata.queries import stacks as stack_q
from procella.metadata.queries import updates as update_q
from procella.settings import Settings
from procella.state.cache import CheckpointCache
from procella.state.states import States
from procella.state.texts import CheckpointTexts
from procella.updates import events as stored_events

log = logging.getLogger(__name__)

BLOB_PREFIX = "checkpoints/"
_BATCH = 500
_DAY_MS = 86_400_000


@dataclass(frozen=True)
class GcReport:
    expired_leases: int = 0
    expired_unstarted: int = 0
    pruned_events: int = 0
    pruned_event_states: int = 0
    pruned_audit_entries: int = 0
    settled_updates: int = 0
    pruned_journal_entries: int = 0
    deleted_blobs: int = 0


async def run_gc_once(meta: MetadataStore, blobs: BlobStore, settings: Settings) -> GcReport:
    leases = await cancel_expired_leases(meta, int(settings.gc_lease_grace_seconds * 1000))
    async with meta.transaction() as conn:
        unstarted = await gc_q.expire_unstarted(
            conn, int(settings.gc_unstarted_update_seconds * 1000)
        )
    pruned = 0
    if settings.event_retention_days > 0:
        pruned = await prune_events(meta, int(settings.event_retention_days * _DAY_MS))
    pruned_states = await prune_event_states(meta)
    pruned_audit = 0
    if settings.audit_retention_days > 0:
        async with meta.transaction() as conn:
            pruned_audit = await audit_q.prune(conn, int(settings.audit_retention_days * _DAY_MS))
    texts = CheckpointTexts(blobs, settings.checkpoint_inline_max_bytes, CheckpointCache(0))
    settled = await settle_frozen_updates(meta, States(meta, texts))
    async with meta.transaction() as conn:
        pruned_entries = await journal_q.prune_materialized(conn)
    deleted = await collect_blobs(meta, blobs, settings.gc_blob_grace_seconds)
    report = GcReport(
        leases, unstarted, pruned, pruned_states, pruned_audit, settled, pruned_entries, deleted
    )
    for item, count in dataclasses.asdict(report).items():
        if count:
            metrics.GC_COLLECTED.labels(item).inc(count)
    return report


async def prune_events(meta: MetadataStore, age_ms: int) -> int:
    """Delete the engine events of updates that ended over ``age_ms`` ago, a stack at a
    time, and the stack's references to the states its remaining events no longer use.

    A stack keeps one reference per state its events use (``events.insert_many``), so the
    references are swept against all its retained events, with the stack locked against
    new events meanwhile: a batch that found a reference in place must not lose it. That
    sweep reads all the stack's events, so a stack is pruned only once its oldest events
    are a tenth of the retention (at most a day) past it: about once a day, not at every
    cycle in which one more update crosses the line.
    """
    async with meta.read() as conn:
        due = age_ms + min(_DAY_MS, age_ms // 10)
        stack_ids = await gc_q.stacks_with_events_before(conn, due)
    pruned = 0
    for stack_id in stack_ids:
        async with meta.transaction() as conn:
            # Locked for update: new events of the stack (FOR KEY SHARE) wait till we commit.
            if await stack_q.get_by_id(conn, stack_id, lock=True) is None:
                continue  # deleted meanwhile, with its events
            pruned += await gc_q.delete_events_before(conn, stack_id, age_ms)
            used: set[str] = set()
            # An update's references at a time: a stack's 90 days of events can be millions.
            for update_id in await gc_q.updates_with_events(conn, stack_id):
                for refs in await gc_q.state_refs(conn, update_id):
                    used.update(digest for _, digest in stored_events.decode_refs(refs))
            unused = await gc_q.stack_states(conn, stack_id) - used
            await gc_q.drop_stack_states(conn, stack_id, sorted(unused))
    return pruned


async def prune_event_states(meta: MetadataStore) -> int:
    try:
        async with meta.transaction() as conn:
            return await gc_q.prune_event_states(conn)
    except NotFound:
        # An update's events referred to one of them again meanwhile: the next cycle.
        log.info("step states in use again while pruning; the next cycle retries")
        return 0


async def cancel_expired_leases(meta: MetadataStore, grace_ms: int) -> int:
    """Cancel abandoned updates, one short transaction each (stacks stay usable meanwhile)."""
    async with meta.read() as conn:
        expired = await gc_q.expired_leases(conn, grace_ms)
    cancelled = 0
    for update_id, stack_id, kind, is_preview in expired:
        running = lifecycle.Lifecycle(update_id, lifecycle.RUNNING, is_preview, lease_live=False)
        abandoned = lifecycle.abandon(running)
        assert abandoned is not None
        async with meta.transaction() as conn:
            # The stack row first, then the update's: the order every writer uses (start,
            # cancel, complete), so the collector never deadlocks with them.
            await stack_q.get_by_id(conn, stack_id, lock=True)
            # Only if its lease is still expired past the grace (it may have ended since).
            done = await update_q.end(conn, stack_id, running, abandoned, lease_ended_ms=grace_ms)
            if done and not is_preview:
                await audit.record_on_stack(
                    conn,
                    stack_id,
                    None,
                    audit.UPDATE_EXPIRE,
                    f"cancelled {kind} {update_id}: its lease expired",
                )
        if done:
            cancelled += 1
            metrics.LEASE_EXPIRIES.inc()
            metrics.UPDATE_OUTCOMES.labels(metrics.update_kind(kind, is_preview), "expired").inc()
            log.info("gc: update %s cancelled: its lease expired", update_id)
    return cancelled


async def settle_frozen_updates(meta: MetadataStore, states: States) -> int:
    """Settle updates that ended (or whose lease expired) without completing: store the
    state of their journal, count their resources (``States.settle``)."""
    async with meta.read() as conn:
        pending = await update_q.unsettled(conn, None, _BATCH)
    for update_id in pending:
        await states.settle_by_id(update_id)
    return len(pending)


async def collect_blobs(meta: MetadataStore, blobs: BlobStore, grace_seconds: float) -> int:
    """Delete checkpoint blobs older than the grace period that no row points at."""
    cutoff = time.time() - grace_seconds
    deleted = 0
    candidates: list[str] = []
    async for info in blobs.scan(BLOB_PREFIX):
        if info.modified_at < cutoff:
            candidates.append(info.key)
        if len(candidates) >= _BATCH:
            deleted += await _delete_unreferenced(meta, blobs, candidates)
            candidates = []
    deleted += await _delete_unreferenced(meta, blobs, candidates)
    return deleted


async def _delete_unreferenced(meta: MetadataStore, blobs: BlobStore, keys: list[str]) -> int:
    if not keys:
        return 0
    async with meta.read() as conn:
        live = await checkpoint_q.referenced_blob_keys(conn, keys)
    orphans = [key for key in keys if key not in live]
    for key in orphans:
        await blobs.delete(key)
    return len(orphans)
