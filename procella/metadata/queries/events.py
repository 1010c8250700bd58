"""Engine events of an update, stored as JSON text keyed by their sequence number, with the
resource states of step events apart in ``event_states`` (``procella.updates.events``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from procella.metadata.base import Connection


@dataclass(frozen=True)
class StoredEvent:
    sequence: int
    kind: str
    body: str  # compact JSON, its states taken out
    state_refs: str | None  # where they go: JSON [[offset, digest], ...]


async def insert_many(
    conn: Connection,
    stack_id: str,
    update_id: str,
    events: Sequence[StoredEvent],
    states: Mapping[str, str] | None = None,
) -> None:
    """Store the events of one of the stack's updates and the states they refer to (digest
    -> text); an event whose sequence is stored already, or a state stored already, is left
    alone.

    One statement per table for the whole batch (the CLI sends up to 50 events in one). The
    caller keeps batches small enough for SQLite's variable limit.
    """
    if not events:
        return
    # The GC's sweep of the stack's references locks the stack for update: it must not
    # drop a reference this batch relies on but has not committed yet (workers/gc.py).
    await conn.fetchone("SELECT id FROM stacks WHERE id = ? FOR KEY SHARE", (stack_id,))
    if states:
        await _insert_states(conn, stack_id, states)
    rows = ", ".join("(?, ?, ?, ?, ?)" for _ in events)
    params = [
        value for e in events for value in (update_id, e.sequence, e.kind, e.body, e.state_refs)
    ]
    await conn.execute(
        f"INSERT INTO update_events (update_id, seq, kind, body, state_refs) VALUES {rows} "
        "ON CONFLICT (update_id, seq) DO NOTHING",
        params,
    )


async def _insert_states(conn: Connection, stack_id: str, states: Mapping[str, str]) -> None:
    digests = list(states)
    marks = ", ".join("?" for _ in digests)
    # Most states of an update are known (its `same` steps'): send only the new ones.
    rows = await conn.fetchall(
        f"SELECT digest FROM event_states WHERE digest IN ({marks})", digests
    )
    known = {str(row[0]) for row in rows}
    new = [d for d in digests if d not in known]
    if new:
        await conn.execute(
            f"INSERT INTO event_states (digest, body) VALUES {', '.join('(?, ?)' for _ in new)} "
            "ON CONFLICT (digest) DO NOTHING",
            [value for d in new for value in (d, states[d])],
        )
    # The references keep the states from the GC while the stack's events use them. Most
    # exist already (the stack's earlier updates made them): those cost no write.
    await conn.execute(
        f"INSERT INTO stack_event_states (stack_id, digest) VALUES "
        f"{', '.join('(?, ?)' for _ in digests)} ON CONFLICT (stack_id, digest) DO NOTHING",
        [value for d in digests for value in (stack_id, d)],
    )


async def page(
    conn: Connection, update_id: str, after: int, limit: int
) -> list[tuple[int, str, str | None]]:
    """Up to ``limit`` events after sequence ``after``: (sequence, body, state refs)."""
    rows = await conn.fetchall(
        "SELECT seq, body, state_refs FROM update_events WHERE update_id = ? AND seq > ? "
        "ORDER BY seq LIMIT ?",
        (update_id, after, limit),
    )
    return [(int(seq), str(body), refs) for seq, body, refs in rows]


async def states(conn: Connection, digests: Sequence[str]) -> dict[str, str]:
    if not digests:
        return {}
    marks = ", ".join("?" for _ in digests)
    rows = await conn.fetchall(
        f"SELECT digest, body FROM event_states WHERE digest IN ({marks})", list(digests)
    )
    return {str(digest): str(body) for digest, body in rows}


async def last_of_kind(conn: Connection, update_id: str, kind: str) -> str | None:
    """The body of the update's last event of ``kind``, for kinds that carry no states."""
    row = await conn.fetchone(
        "SELECT body FROM update_events WHERE update_id = ? AND kind = ? ORDER BY seq DESC LIMIT 1",
        (update_id, kind),
    )
    return None if row is None else str(row[0])
