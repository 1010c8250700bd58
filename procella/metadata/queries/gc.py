"""The garbage collector's queries. Each runs in its own short transaction."""

from __future__ import annotations

from procella.metadata.base import Connection
from procella.metadata.queries import updates as update_q


async def cancel_expired_leases(conn: Connection, grace_ms: int) -> list[str]:
    """Cancel running updates whose lease ended more than ``grace_ms`` ago; free their stacks."""
    rows = await conn.fetchall(
        # SKIP LOCKED: a row another transaction holds is in use right now; next cycle.
        "SELECT id, stack_id FROM updates WHERE status = ? AND lease_expires_at < NOW_MS - ? "
        "FOR UPDATE SKIP LOCKED",
        (update_q.RUNNING, grace_ms),
    )
    for update_id, stack_id in rows:
        await update_q.finish(conn, update_id, update_q.CANCELLED)
        await conn.execute(
            "UPDATE stacks SET active_update_id = NULL WHERE id = ? AND active_update_id = ?",
            (stack_id, update_id),
        )
    return [str(r[0]) for r in rows]


async def expire_unstarted(conn: Connection, age_ms: int) -> int:
    """Cancel updates created more than ``age_ms`` ago and never started."""
    return await conn.execute(
        "UPDATE updates SET status = ?, ended_at = NOW_MS "
        "WHERE status = ? AND created_at < NOW_MS - ?",
        (update_q.CANCELLED, update_q.NOT_STARTED, age_ms),
    )


async def prune_events(conn: Connection, age_ms: int) -> int:
    """Delete the engine events of updates that ended more than ``age_ms`` ago."""
    return await conn.execute(
        "DELETE FROM update_events WHERE update_id IN "
        "(SELECT id FROM updates WHERE ended_at < NOW_MS - ?)",
        (age_ms,),
    )
