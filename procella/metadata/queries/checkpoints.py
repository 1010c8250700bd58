"""Checkpoints: one row per stack version, holding the exact text the CLI sent.

The text lives inline in ``data`` when small, or in the blob store under ``blob_key``.
"""

from __future__ import annotations

from procella.metadata.base import CheckpointRecord, Connection, Row

_COLUMNS = "stack_id, version, update_id, sha256, size, data, blob_key, created_at"


def _checkpoint(row: Row) -> CheckpointRecord:
    data = row[5]
    return CheckpointRecord(
        stack_id=row[0],
        version=int(row[1]),
        update_id=row[2],
        sha256=row[3],
        size=int(row[4]),
        data=None if data is None else bytes(data),
        blob_key=row[6],
        created_at=int(row[7]),
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
    sha256: str,
    size: int,
    data: bytes | None,
    blob_key: str | None,
) -> None:
    """Insert or replace the checkpoint of one stack version."""
    await conn.execute(
        f"INSERT INTO checkpoints ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, NOW_MS) "
        "ON CONFLICT (stack_id, version) DO UPDATE SET update_id = excluded.update_id, "
        "sha256 = excluded.sha256, size = excluded.size, data = excluded.data, "
        "blob_key = excluded.blob_key, created_at = excluded.created_at",
        (stack_id, version, update_id, sha256, size, data, blob_key),
    )


async def referenced_blob_keys(conn: Connection, keys: list[str]) -> set[str]:
    """Those of ``keys`` that some checkpoint row points at."""
    if not keys:
        return set()
    marks = ", ".join("?" for _ in keys)
    rows = await conn.fetchall(
        f"SELECT DISTINCT blob_key FROM checkpoints WHERE blob_key IN ({marks})", keys
    )
    return {str(r[0]) for r in rows}
