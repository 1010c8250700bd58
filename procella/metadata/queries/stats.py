"""Counts for the metrics endpoint: one cheap statement per scrape (``updates_status``)."""

from __future__ import annotations

from procella import lifecycle
from procella.metadata.base import Connection


async def running_updates(conn: Connection) -> list[tuple[str, bool, bool, int]]:
    """``(kind, is_preview, lease live, count)`` of every running update in the deployment."""
    rows = await conn.fetchall(
        "SELECT kind, is_preview, CASE WHEN lease_expires_at > NOW_MS THEN 1 ELSE 0 END, "
        "COUNT(*) FROM updates WHERE status = ? GROUP BY 1, 2, 3",
        (lifecycle.RUNNING,),
    )
    return [(str(k), bool(p), bool(live), int(n)) for k, p, live, n in rows]
