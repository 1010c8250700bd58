"""Checkpoints: one row per stack version; its text is a full text or a chain of deltas.

A full text lives inline in ``data`` when small, or in the blob store under ``blob_key``.
A step of an update stores only its delta (``checkpoint_deltas``), and now and then a full
text again (compaction): see ``CheckpointRecord`` and ``procella.state.states``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from procella.lifecycle import RUNNING
from procella.metadata.base import CheckpointRecord, Connection, Row, UpdateRecord

_COLUMNS = (
    "stack_id, version, update_id, sha256, size, resource_count, data, blob_key, created_at, "
    "seq, full_seq, base_version, chain_bytes"
)
_VALUES = "?, ?, ?, ?, ?, ?, ?, ?, NOW_MS, ?, ?, ?, ?"
_UPSERT = (
    "ON CONFLICT (stack_id, version) DO UPDATE SET update_id = excluded.update_id, "
    "sha256 = excluded.sha256, size = excluded.size, "
    "resource_count = excluded.resource_count, data = excluded.data, "
    "blob_key = excluded.blob_key, created_at = excluded.created_at, seq = excluded.seq, "
    "full_seq = excluded.full_seq, base_version = excluded.base_version, "
    "chain_bytes = excluded.chain_bytes"
)
# A full text in the middle of an update (compaction) keeps the row's resource count, which
# only `complete` recounts.
_UPSERT_FULL = _UPSERT.replace(" resource_count = excluded.resource_count,", "")
# A delta step after the first keeps the row's full text (or base) and count: only its head
# moves.
_MOVE_HEAD = "sha256 = ?, size = ?, created_at = NOW_MS, seq = ?, chain_bytes = ?"
# Compare-and-set of an update's checkpoint sequence, allowed only while its lease is live.
_ADVANCE = (
    "UPDATE updates SET checkpoint_seq = ?, checkpoint_sha = ?, checkpoint_chain = ? "
    "WHERE id = ? AND status = ? AND lease_hash = ? AND lease_expires_at > NOW_MS "
    "AND checkpoint_seq = ?"
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
        seq=int(row[9]),
        full_seq=int(row[10]),
        base_version=None if row[11] is None else int(row[11]),
        chain_bytes=int(row[12]),
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


def _full_row(
    stack_id: str, version: int, update_id: str | None, text: StoredRow, count: int
) -> list[Any]:
    return [
        stack_id,
        version,
        update_id,
        text.sha256,
        text.size,
        count,
        text.data,
        text.blob_key,
        0,
        0,
        None,
        0,
    ]


async def put(
    conn: Connection,
    stack_id: str,
    version: int,
    update_id: str | None,
    text: StoredRow,
    resource_count: int,
) -> None:
    """Insert or replace the checkpoint of one stack version with a full text."""
    await conn.execute(
        f"INSERT INTO checkpoints ({_COLUMNS}) VALUES ({_VALUES}) {_UPSERT}",
        _full_row(stack_id, version, update_id, text, resource_count),
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
        f"INSERT INTO checkpoints ({_COLUMNS}) VALUES ({_VALUES}) "
        "ON CONFLICT (stack_id, version) DO NOTHING",
        _full_row(stack_id, version, update_id, text, resource_count),
    )
    return changed == 1


@dataclass(frozen=True)
class Step:
    """One checkpoint step as stored: a delta from the previous text, or a full text.

    ``base_version`` names the version whose text a delta applies to when the row does not
    exist yet (the update's first step); ``resource_count`` is used only then, or with a
    full text.
    """

    seq: int
    sha256: str
    size: int
    chain_bytes: int
    resource_count: int
    edits: bytes | None = None
    base_version: int | None = None
    text: StoredRow | None = None


async def save_step(
    conn: Connection,
    update: UpdateRecord,
    lease_hash: str,
    step: Step,
) -> tuple[bool, str | None]:
    """Advance the update to checkpoint ``step.seq`` and store the step, atomically.

    Returns ``(False, None)``, writing nothing, when the lease is not live or another write
    got there first. After a full text, also returns the blob key of the full text it
    superseded (the caller deletes that blob). On PostgreSQL this is a single statement.
    """
    advance = [step.seq, step.sha256, step.chain_bytes]
    advance += [update.id, RUNNING, lease_hash, update.checkpoint_seq]
    if conn.dialect == "postgres":
        return await _save_step_pg(conn, update, advance, step)
    if await conn.execute(_ADVANCE, advance) != 1:
        return False, None
    where = (update.stack_id, update.version)
    if step.text is None:
        await conn.execute(
            "INSERT INTO checkpoint_deltas (stack_id, version, seq, edits) VALUES (?, ?, ?, ?)",
            (*where, step.seq, step.edits),
        )
        if step.base_version is not None:  # the update's first step: the row is new
            await conn.execute(
                f"INSERT INTO checkpoints ({_COLUMNS}) VALUES ({_VALUES})", _step_row(update, step)
            )
        else:
            await conn.execute(
                f"UPDATE checkpoints SET {_MOVE_HEAD} WHERE stack_id = ? AND version = ?",
                (step.sha256, step.size, step.seq, step.chain_bytes, *where),
            )
        return True, None
    old = await conn.fetchone(
        "SELECT blob_key FROM checkpoints WHERE stack_id = ? AND version = ?", where
    )
    await conn.execute(
        "DELETE FROM checkpoint_deltas WHERE stack_id = ? AND version = ? AND seq <= ?",
        (*where, step.seq),
    )
    await conn.execute(
        f"INSERT INTO checkpoints ({_COLUMNS}) VALUES ({_VALUES}) {_UPSERT_FULL}",
        _step_row(update, step),
    )
    return True, None if old is None else old[0]


async def _save_step_pg(
    conn: Connection, update: UpdateRecord, advance: list[Any], step: Step
) -> tuple[bool, str | None]:
    if step.text is None:
        head = (
            f"WITH step AS ({_ADVANCE} RETURNING stack_id, version), "
            "delta AS (INSERT INTO checkpoint_deltas (stack_id, version, seq, edits) "
            "SELECT stack_id, version, ?, ? FROM step) "
        )
        params = [*advance, step.seq, step.edits]
        if step.base_version is not None:  # the update's first step: the row is new
            changed = await conn.execute(
                f"{head} INSERT INTO checkpoints ({_COLUMNS}) "
                "SELECT stack_id, version, ?, ?, ?, ?, NULL, NULL, NOW_MS, ?, 0, ?, ? FROM step",
                [
                    *params,
                    *_step_row(update, step)[2:6],
                    step.seq,
                    step.base_version,
                    step.chain_bytes,
                ],
            )
        else:
            changed = await conn.execute(
                f"{head} UPDATE checkpoints c SET {_MOVE_HEAD} FROM step "
                "WHERE c.stack_id = step.stack_id AND c.version = step.version",
                [*params, step.sha256, step.size, step.seq, step.chain_bytes],
            )
        return changed == 1, None
    # The sub-statements see the table as it was before the statement: `old` is the
    # full text this one supersedes.
    row = await conn.fetchone(
        f"WITH step AS ({_ADVANCE} RETURNING stack_id, version), "
        "old AS (SELECT blob_key FROM checkpoints WHERE stack_id = ? AND version = ?), "
        "gone AS (DELETE FROM checkpoint_deltas WHERE stack_id = ? AND version = ? "
        "AND seq <= ? AND EXISTS (SELECT 1 FROM step)) "
        f"INSERT INTO checkpoints ({_COLUMNS}) "
        "SELECT stack_id, version, ?, ?, ?, ?, ?, ?, NOW_MS, ?, ?, NULL, 0 FROM step "
        f"{_UPSERT_FULL} "
        "RETURNING (SELECT blob_key FROM old)",
        [
            *advance,
            update.stack_id,
            update.version,
            update.stack_id,
            update.version,
            step.seq,
            *_step_row(update, step)[2:8],
            step.seq,
            step.seq,
        ],
    )
    if row is None:
        return False, None
    return True, row[0]


def _step_row(update: UpdateRecord, step: Step) -> list[Any]:
    """The row of a step: a full text taken at this step, or a head of deltas."""
    full = step.text
    return [
        update.stack_id,
        update.version,
        update.id,
        step.sha256,
        step.size,
        step.resource_count,
        None if full is None else full.data,
        None if full is None else full.blob_key,
        step.seq,
        0 if full is None else step.seq,
        None if full is not None else step.base_version,
        0 if full is not None else step.chain_bytes,
    ]


async def deltas(
    conn: Connection, stack_id: str, version: int, after_seq: int, upto_seq: int
) -> list[bytes]:
    """The version's stored deltas with ``after_seq < seq <= upto_seq``, in order."""
    rows = await conn.fetchall(
        "SELECT edits FROM checkpoint_deltas WHERE stack_id = ? AND version = ? "
        "AND seq > ? AND seq <= ? ORDER BY seq",
        (stack_id, version, after_seq, upto_seq),
    )
    return [bytes(r[0]) for r in rows]


async def set_resource_count(conn: Connection, stack_id: str, version: int, count: int) -> None:
    await conn.execute(
        "UPDATE checkpoints SET resource_count = ? WHERE stack_id = ? AND version = ?",
        (count, stack_id, version),
    )


async def compact(conn: Connection, record: CheckpointRecord, text: StoredRow) -> str | None:
    """Give a row a full text of its current state (its step ``seq``) and drop the deltas
    it no longer needs. Returns the blob key of the full text it superseded, if any; does
    nothing (and returns None) if the row moved on meanwhile."""
    where = (record.stack_id, record.version)
    old = await conn.fetchone(
        "SELECT blob_key FROM checkpoints WHERE stack_id = ? AND version = ? AND seq = ? "
        "FOR UPDATE",
        (*where, record.seq),
    )
    if old is None:
        return None
    await conn.execute(
        "UPDATE checkpoints SET data = ?, blob_key = ?, full_seq = seq, base_version = NULL, "
        "chain_bytes = 0 WHERE stack_id = ? AND version = ?",
        (text.data, text.blob_key, *where),
    )
    await conn.execute(
        "DELETE FROM checkpoint_deltas WHERE stack_id = ? AND version = ? AND seq <= ?",
        (*where, record.seq),
    )
    return None if old[0] is None else str(old[0])


async def put_delta(
    conn: Connection,
    stack_id: str,
    version: int,
    update_id: str,
    step: Step,
) -> None:
    """Make a version's state one delta (its step 1) from version ``step.base_version``."""
    await conn.execute(
        "DELETE FROM checkpoint_deltas WHERE stack_id = ? AND version = ?", (stack_id, version)
    )
    await conn.execute(
        "INSERT INTO checkpoint_deltas (stack_id, version, seq, edits) VALUES (?, ?, ?, ?)",
        (stack_id, version, step.seq, step.edits),
    )
    row = [stack_id, version, update_id, step.sha256, step.size, step.resource_count, None, None]
    await conn.execute(
        f"INSERT INTO checkpoints ({_COLUMNS}) VALUES ({_VALUES}) {_UPSERT}",
        [*row, step.seq, 0, step.base_version, step.chain_bytes],
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
