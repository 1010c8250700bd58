"""Engine events of an update, stored as JSON text keyed by their sequence number."""

from __future__ import annotations

from collections.abc import Sequence

from procella.metadata.base import Connection


async def insert_many(
    conn: Connection, update_id: str, events: Sequence[tuple[int, str, str]]
) -> None:
    """Store ``(sequence, kind, json)`` events; a sequence already stored is left alone.

    One statement for the whole batch (the CLI sends up to 50 events in one): a single
    round trip. The caller keeps batches small enough for SQLite's variable limit.
    """
    if not events:
        return
    rows = ", ".join("(?, ?, ?, ?)" for _ in events)
    params = [value for seq, kind, body in events for value in (update_id, seq, kind, body)]
    await conn.execute(
        f"INSERT INTO update_events (update_id, seq, kind, body) VALUES {rows} "
        "ON CONFLICT (update_id, seq) DO NOTHING",
        params,
    )


async def page(conn: Connection, update_id: str, after: int, limit: int) -> list[tuple[int, str]]:
    rows = await conn.fetchall(
        "SELECT seq, body FROM update_events WHERE update_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        (update_id, after, limit),
    )
    return [(int(seq), str(body)) for seq, body in rows]


async def last_of_kind(conn: Connection, update_id: str, kind: str) -> str | None:
    row = await conn.fetchone(
        "SELECT body FROM update_events WHERE update_id = ? AND kind = ? ORDER BY seq DESC LIMIT 1",
        (update_id, kind),
    )
    return None if row is None else str(row[0])
