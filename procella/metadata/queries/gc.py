"""The garbage collector's queries. Each runs in its own short transaction."""

from __future__ import annotations

from collections.abc import Sequence

from procella import lifecycle
from procella.metadata.base import Connection

_CHUNK = 500  # digests per DELETE, under SQLite's variable limit


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


async def stacks_with_events_before(conn: Connection, age_ms: int) -> list[str]:
    """The stacks that hold engine events of updates that ended over ``age_ms`` ago."""
    rows = await conn.fetchall(
        "SELECT DISTINCT u.stack_id FROM updates u WHERE u.ended_at < NOW_MS - ? "
        "AND EXISTS (SELECT 1 FROM update_events e WHERE e.update_id = u.id)",
        (age_ms,),
    )
    return [str(row[0]) for row in rows]


async def delete_events_before(conn: Connection, stack_id: str, age_ms: int) -> int:
    return await conn.execute(
        "DELETE FROM update_events WHERE update_id IN "
        "(SELECT id FROM updates WHERE stack_id = ? AND ended_at < NOW_MS - ?)",
        (stack_id, age_ms),
    )


async def updates_with_events(conn: Connection, stack_id: str) -> list[str]:
    rows = await conn.fetchall(
        "SELECT u.id FROM updates u WHERE u.stack_id = ? "
        "AND EXISTS (SELECT 1 FROM update_events e WHERE e.update_id = u.id)",
        (stack_id,),
    )
    return [str(row[0]) for row in rows]


async def state_refs(conn: Connection, update_id: str) -> list[str]:
    """The update's events' references to states, as stored (``events.StoredEvent``)."""
    rows = await conn.fetchall(
        "SELECT state_refs FROM update_events WHERE update_id = ? AND state_refs IS NOT NULL",
        (update_id,),
    )
    return [str(row[0]) for row in rows]


async def stack_states(conn: Connection, stack_id: str) -> set[str]:
    """The digests of the states the stack keeps for its events."""
    rows = await conn.fetchall(
        "SELECT digest FROM stack_event_states WHERE stack_id = ?", (stack_id,)
    )
    return {str(row[0]) for row in rows}


async def drop_stack_states(conn: Connection, stack_id: str, digests: Sequence[str]) -> None:
    for start in range(0, len(digests), _CHUNK):
        chunk = digests[start : start + _CHUNK]
        await conn.execute(
            f"DELETE FROM stack_event_states WHERE stack_id = ? "
            f"AND digest IN ({', '.join('?' for _ in chunk)})",
            [stack_id, *chunk],
        )


async def prune_event_states(conn: Connection) -> int:
    """Delete the step states no stack keeps: their events were pruned or their stack
    deleted. A reference added meanwhile makes this fail (a foreign key)."""
    return await conn.execute(
        "DELETE FROM event_states WHERE NOT EXISTS "
        "(SELECT 1 FROM stack_event_states r WHERE r.digest = event_states.digest)"
    )
