"""The garbage collector's queries. Each runs in its own short transaction."""

from __future__ import annotations

from procella import lifecycle
from procella.metadata.base import Connection


async def expired_leases(conn: Connection, grace_ms: int) -> list[tuple[str, str, str, bool]]:
    """``(update id, stack id, kind, is preview)`` of running updates whose lease ended over
    ``grace_ms`` ago: abandoned (``lifecycle.abandon``), the stack held meanwhile."""
    rows = await conn.fetchall(
        "SELECT id, stack_id, kind, is_preview FROM updates "
        "WHERE status = ? AND lease_expires_at < NOW_MS - ?",
        (lifecycle.RUNNING, grace_ms),
    )
    return [(str(u), str(s), str(k), bool(p)) for u, s, k, p in rows]


async def expire_unstarted(conn: Connection, age_ms: int) -> int:
    """Cancel updates created more than ``age_ms`` ago and never started, all at once:
    ``lifecycle.expire`` decides the same for one (they hold no stack and no lease)."""
    expired = lifecycle.expire(lifecycle.Lifecycle("", lifecycle.NOT_STARTED, False, False))
    assert expired is not None
    return await conn.execute(
        "UPDATE updates SET status = ?, ended_at = NOW_MS "
        "WHERE status = ? AND created_at < NOW_MS - ?",
        (expired.status, lifecycle.NOT_STARTED, age_ms),
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
