"""Checkpoints: one row per stack version, holding the exact text the CLI sent.

The text lives inline in ``data`` when small, or in the blob store under ``blob_key``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from procella.metadata.base import CheckpointRecord, Connection, Row, UpdateRecord
from procella.metadata.queries.updates import RUNNING

_COLUMNS = "stack_id, version, update_id, sha256, size, resource_count, data, blob_key, created_at"
_UPSERT = (
    "ON CONFLICT (stack_id, version) DO UPDATE SET update_id = excluded.update_id, "
    "sha256 = excluded.sha256, size = excluded.size, "
    "resource_count = excluded.resource_count, data = excluded.data, "
    "blob_key = excluded.blob_key, created_at = excluded.created_at"
)
# Compare-and-set of an update's checkpoint sequence, allowed only while its lease is live.
_ADVANCE = (
    "UPDATE updates SET checkpoint_seq = ?, checkpoint_sha = ? WHERE id = ? AND status = ? "
    "AND lease_hash = ? AND lease_expires_at > NOW_MS"
)


class StoredRow(Protocol):
    """Where a checkpoint text lives: inline ``data`` or a ``blob_key``."""

    @property
    def sha256(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def data(self) -> bytes | None: ...
    @property
    def blob_key(self) -> str | None: ...


def _checkpoint(row: Row) -> CheckpointRecord:
    data = row[6]
    return CheckpointRecord(
        stack_id=row[0],
        version=int(row[1]),
        update_id=row[2],
        sha256=row[3],
        size=int(row[4]),
        resource_count=int(row[5]),
        data=None if data is None else bytes(data),
        blob_key=row[7],
        created_at=int(row[8]),
    )


async def latest(
    conn: Connection, stack_id: str, *, at_most: int | None = None
) -> CheckpointRecord | None:
    """The newest checkpoint of the stack, or the newest at or before version ``at_most``."""
    if at_most is None:
        row = await conn.fetchone(
            f"SELECT {_COLUMNS} FROM checkpoints WHERE stack_id = ? ORDER BY version DESC LIMIT 1",
            (stack_id,),
        )
    else:
        row = await conn.fetchone(
            f"SELECT {_COLUMNS} FROM checkpoints WHERE stack_id = ? AND version <= ? "
            "ORDER BY version DESC LIMIT 1",
            (stack_id, at_most),
        )
    return None if row is None else _checkpoint(row)


@dataclass(frozen=True)
class CheckpointSummary:
    """What a checkpoint row says about its text, without the text."""

    version: int
    sha256: str
    resource_count: int


async def latest_summary(
    conn: Connection, stack_id: str, *, at_most: int | None = None
) -> CheckpointSummary | None:
    """``latest`` without the text: for callers that need only its identity or count."""
    sql = "SELECT version, sha256, resource_count FROM checkpoints WHERE stack_id = ?"
    params: list[Any] = [stack_id]
    if at_most is not None:
        sql += " AND version <= ?"
        params.append(at_most)
    row = await conn.fetchone(sql + " ORDER BY version DESC LIMIT 1", params)
    return None if row is None else CheckpointSummary(int(row[0]), row[1], int(row[2]))


async def get(conn: Connection, stack_id: str, version: int) -> CheckpointRecord | None:
    row = await conn.fetchone(
        f"SELECT {_COLUMNS} FROM checkpoints WHERE stack_id = ? AND version = ?",
        (stack_id, version),
    )
    return None if row is None else _checkpoint(row)


async def put(
    conn: Connection,
    stack_id: str,
    version: int,
    update_id: str | None,
    text: StoredRow,
    resource_count: int,
) -> None:
    """Insert or replace the checkpoint of one stack version."""
    await conn.execute(
        f"INSERT INTO checkpoints ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NOW_MS) {_UPSERT}",
        (
            stack_id,
            version,
            update_id,
            text.sha256,
            text.size,
            resource_count,
            text.data,
            text.blob_key,
        ),
    )


async def put_new(
    conn: Connection,
    stack_id: str,
    version: int,
    update_id: str,
    text: StoredRow,
    resource_count: int,
) -> bool:
    """Insert the checkpoint of one stack version unless it has one; True if inserted."""
    changed = await conn.execute(
        f"INSERT INTO checkpoints ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NOW_MS) "
        "ON CONFLICT (stack_id, version) DO NOTHING",
        (
            stack_id,
            version,
            update_id,
            text.sha256,
            text.size,
            resource_count,
            text.data,
            text.blob_key,
        ),
    )
    return changed == 1


async def save_step(
    conn: Connection,
    update: UpdateRecord,
    lease_hash: str,
    expected_seq: int | None,
    new_seq: int,
    text: StoredRow,
    resource_count: int,
) -> bool:
    """Advance the update to checkpoint ``new_seq`` and store its text, atomically.

    ``expected_seq`` None skips the sequence check (full checkpoints carry no number).
    Returns False, writing nothing, when the lease is not live or another write got there
    first. On PostgreSQL this is a single statement: one round trip.
    """
    advance = _ADVANCE
    params: list[Any] = [new_seq, text.sha256, update.id, RUNNING, lease_hash]
    if expected_seq is not None:
        advance += " AND checkpoint_seq = ?"
        params.append(expected_seq)
    row_values = [update.id, text.sha256, text.size, resource_count, text.data, text.blob_key]
    if conn.dialect == "postgres":
        changed = await conn.execute(
            f"WITH step AS ({advance} RETURNING stack_id, version) "
            f"INSERT INTO checkpoints ({_COLUMNS}) "
            f"SELECT stack_id, version, ?, ?, ?, ?, ?, ?, NOW_MS FROM step {_UPSERT}",
            [*params, *row_values],
        )
        return changed == 1
    if await conn.execute(advance, params) != 1:
        return False
    await conn.execute(
        f"INSERT INTO checkpoints ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NOW_MS) {_UPSERT}",
        [update.stack_id, update.version, *row_values],
    )
    return True


async def referenced_blob_keys(conn: Connection, keys: list[str]) -> set[str]:
    """Those of ``keys`` that some checkpoint row points at."""
    if not keys:
        return set()
    marks = ", ".join("?" for _ in keys)
    rows = await conn.fetchall(
        f"SELECT DISTINCT blob_key FROM checkpoints WHERE blob_key IN ({marks})", keys
    )
    return {str(r[0]) for r in rows}
