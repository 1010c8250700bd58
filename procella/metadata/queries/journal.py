"""Journal entries of journaling updates, kept in the order they arrived.

An entry is stored once, under its sequence ID; a retried batch finds its entries already
there. ``position`` numbers entries in arrival order, which is the order the CLI replays
them in (its batches are sent one at a time).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from procella import lifecycle
from procella.metadata.base import Connection


@dataclass(frozen=True)
class StoredEntry:
    sequence_id: int
    kind: int
    body: bytes  # the entry as compact JSON


async def lock_live(conn: Connection, update_id: str, lease_hash: str) -> int | None:
    """Lock a running update whose lease ``lease_hash`` is live; its ``journal_count``."""
    row = await conn.fetchone(
        "SELECT journal_count FROM updates WHERE id = ? AND status = ? AND lease_hash = ? "
        "AND lease_expires_at > NOW_MS FOR UPDATE",
        (update_id, lifecycle.RUNNING, lease_hash),
    )
    return None if row is None else int(row[0])


async def bodies(conn: Connection, update_id: str, sequence_ids: Sequence[int]) -> dict[int, bytes]:
    """The stored bodies of those of ``sequence_ids`` the update already has."""
    if not sequence_ids:
        return {}
    marks = ", ".join("?" for _ in sequence_ids)
    rows = await conn.fetchall(
        f"SELECT sequence_id, body FROM journal_entries WHERE update_id = ? "
        f"AND sequence_id IN ({marks})",
        [update_id, *sequence_ids],
    )
    return {int(r[0]): bytes(r[1]) for r in rows}


async def append(
    conn: Connection, update_id: str, first_position: int, entries: Sequence[StoredEntry]
) -> None:
    """Store new entries after the update's ``first_position - 1`` earlier ones."""
    if not entries:
        return
    await conn.executemany(
        "INSERT INTO journal_entries (update_id, sequence_id, position, kind, body) "
        "VALUES (?, ?, ?, ?, ?)",
        [
            (update_id, e.sequence_id, first_position + i, e.kind, e.body)
            for i, e in enumerate(entries)
        ],
    )
    await conn.execute(
        "UPDATE updates SET journal_count = journal_count + ?, journal_last_at = NOW_MS "
        "WHERE id = ?",
        (len(entries), update_id),
    )


async def entries(
    conn: Connection, update_id: str, after: int, limit: int
) -> list[tuple[int, bytes]]:
    """Up to ``limit`` entries of the update after arrival position ``after``, in arrival
    order, with their positions: a long journal is read a page at a time."""
    rows = await conn.fetchall(
        "SELECT position, body FROM journal_entries WHERE update_id = ? AND position > ? "
        "ORDER BY position LIMIT ?",
        (update_id, after, limit),
    )
    return [(int(r[0]), bytes(r[1])) for r in rows]


async def unmaterialized(
    conn: Connection, stack_id: str, after_version: int, at_most: int | None
) -> list[str]:
    """Ids of the stack's started journaling updates newer than ``after_version`` (and at
    most ``at_most``) whose state has no checkpoint row yet, oldest first."""
    sql = (
        "SELECT u.id FROM updates u WHERE u.stack_id = ? AND u.journal_version = 1 "
        "AND u.is_preview = FALSE AND u.version > ? AND u.status != ? "
        "AND NOT EXISTS (SELECT 1 FROM checkpoints c "
        "WHERE c.stack_id = u.stack_id AND c.version = u.version)"
    )
    params: list[object] = [stack_id, after_version, lifecycle.NOT_STARTED]
    if at_most is not None:
        sql += " AND u.version <= ?"
        params.append(at_most)
    rows = await conn.fetchall(sql + " ORDER BY u.version", params)
    return [str(r[0]) for r in rows]


async def prune_materialized(conn: Connection) -> int:
    """Delete the entries of ended updates whose state is stored: nothing replays them."""
    return await conn.execute(
        "DELETE FROM journal_entries WHERE update_id IN (SELECT u.id FROM updates u "
        "WHERE u.journal_version = 1 AND u.status IN (?, ?, ?) AND EXISTS "
        "(SELECT 1 FROM checkpoints c WHERE c.stack_id = u.stack_id AND c.version = u.version))",
        lifecycle.TERMINAL,
    )
