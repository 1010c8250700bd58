"""The garbage collector's queries. Each runs in its own short transaction."""

from __future__ import annotations

from procella.metadata.base import Connection
from procella.metadata.queries import updates as update_q


async def expired_leases(conn: Connection, grace_ms: int) -> list[tuple[str, str, str, bool]]:
    """``(update id, stack id, kind, is preview)`` of running updates whose lease ended over
    ``grace_ms`` ago."""
    rows = await conn.fetchall(
        "SELECT id, stack_id, kind, is_preview FROM updates "
        "WHERE status = ? AND lease_expires_at < NOW_MS - ?",
        (update_q.RUNNING, grace_ms),
    )
    return [(str(u), str(s), str(k), bool(p)) for u, s, k, p in rows]


async def cancel_expired_lease(
    conn: Connection, update_id: str, stack_id: str, grace_ms: int
) -> bool:
    """Cancel the update if its lease is still expired, and free its stack.

    The stack row is locked first, then the update's: the order every writer uses (start,
    cancel, complete), so the collector never deadlocks with them.
    """
    await conn.fetchone("SELECT id FROM stacks WHERE id = ? FOR UPDATE", (stack_id,))
    changed = await conn.execute(
        "UPDATE updates SET status = ?, ended_at = NOW_MS, lease_expires_at = NULL "
        "WHERE id = ? AND status = ? AND lease_expires_at < NOW_MS - ?",
        (update_q.CANCELLED, update_id, update_q.RUNNING, grace_ms),
    )
    if changed:
        await conn.execute(
            "UPDATE stacks SET active_update_id = NULL WHERE id = ? AND active_update_id = ?",
            (stack_id, update_id),
        )
    return changed == 1


async def expire_unstarted(conn: Connection, age_ms: int) -> int:
    """Cancel updates created more than ``age_ms`` ago and never started."""
    return await conn.execute(
        "UPDATE updates SET status = ?, ended_at = NOW_MS "
        "WHERE status = ? AND created_at < NOW_MS - ?",
        (update_q.CANCELLED, update_q.NOT_STARTED, age_ms),
    )


async def prune_events(conn: Connection, age_ms: int) -> int:
    """Delete the engine events of updates that ended more than ``age_ms`` ago, and their
    references to step states."""
    ended = "(SELECT id FROM updates WHERE ended_at < NOW_MS - ?)"
    await conn.execute(f"DELETE FROM event_state_refs WHERE update_id IN {ended}", (age_ms,))
    return await conn.execute(f"DELETE FROM update_events WHERE update_id IN {ended}", (age_ms,))


async def prune_event_states(conn: Connection) -> int:
    """Delete the step states no update's events refer to: their events were pruned or
    their stack deleted. A reference added meanwhile makes this fail (a foreign key)."""
    return await conn.execute(
        "DELETE FROM event_states WHERE NOT EXISTS "
        "(SELECT 1 FROM event_state_refs r WHERE r.digest = event_states.digest)"
    )
