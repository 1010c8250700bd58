"""Updates: their lifecycle, leases and checkpoint sequence."""

from __future__ import annotations

from procella.lifecycle import NOT_STARTED, RUNNING, SUCCEEDED, TERMINAL, Lifecycle
from procella.metadata.base import Connection, Row, UpdateRecord
from procella.metadata.queries import new_id

_COLUMNS = (
    "u.id, u.stack_id, u.kind, u.is_preview, u.status, u.version, u.created_by, u.created_at, "
    "u.started_at, u.ended_at, u.lease_hash, u.lease_expires_at, "
    "CASE WHEN u.lease_expires_at > NOW_MS THEN 1 ELSE 0 END, u.checkpoint_seq, "
    "u.checkpoint_sha, u.program, u.config, u.metadata, u.resource_changes, u.resource_count, "
    "u.journal_version, u.journal_count, u.journal_last_at, u.client_version, u.checkpoint_chain"
)


def _update(row: Row) -> UpdateRecord:
    def opt_int(value: object) -> int | None:
        return None if value is None else int(value)  # type: ignore[call-overload]

    return UpdateRecord(
        id=row[0],
        stack_id=row[1],
        kind=row[2],
        is_preview=bool(row[3]),
        status=row[4],
        version=opt_int(row[5]),
        created_by=row[6],
        created_at=int(row[7]),
        started_at=opt_int(row[8]),
        ended_at=opt_int(row[9]),
        lease_hash=row[10],
        lease_expires_at=opt_int(row[11]),
        lease_live=bool(row[12]),
        checkpoint_seq=int(row[13]),
        checkpoint_sha=row[14],
        program=row[15],
        config=row[16],
        metadata=row[17],
        resource_changes=row[18],
        resource_count=opt_int(row[19]),
        journal_version=int(row[20]),
        journal_count=int(row[21]),
        journal_last_at=opt_int(row[22]),
        client_version=row[23],
        checkpoint_chain=int(row[24]),
    )


async def get(conn: Connection, update_id: str, *, lock: bool = False) -> UpdateRecord | None:
    sql = f"SELECT {_COLUMNS} FROM updates u WHERE u.id = ?"
    if lock:
        sql += " FOR UPDATE"
    row = await conn.fetchone(sql, (update_id,))
    return None if row is None else _update(row)


async def get_with_ref(
    conn: Connection, update_id: str
) -> tuple[UpdateRecord, tuple[str, str, str]] | None:
    """The update and the current ``(org, project, stack)`` names of its stack."""
    row = await conn.fetchone(
        f"SELECT {_COLUMNS}, o.name, s.project, s.name FROM updates u "
        "JOIN stacks s ON s.id = u.stack_id JOIN orgs o ON o.id = s.org_id WHERE u.id = ?",
        (update_id,),
    )
    if row is None:
        return None
    return _update(row), (row[-3], row[-2], row[-1])


async def insert(
    conn: Connection,
    stack_id: str,
    kind: str,
    *,
    is_preview: bool,
    created_by: str,
    program: str = "{}",
    config: str = "{}",
    metadata: str = "{}",
) -> str:
    update_id = new_id()
    await conn.execute(
        "INSERT INTO updates (id, stack_id, kind, is_preview, status, created_by, created_at, "
        "program, config, metadata) VALUES (?, ?, ?, ?, ?, ?, NOW_MS, ?, ?, ?)",
        (update_id, stack_id, kind, is_preview, NOT_STARTED, created_by, program, config, metadata),
    )
    return update_id


async def insert_finished(
    conn: Connection, stack_id: str, kind: str, version: int, created_by: str, resource_count: int
) -> str:
    """Record an operation that completed at once (import, rename): a history entry."""
    update_id = new_id()
    await conn.execute(
        "INSERT INTO updates (id, stack_id, kind, is_preview, status, version, created_by, "
        "created_at, started_at, ended_at, resource_count) "
        "VALUES (?, ?, ?, FALSE, ?, ?, ?, NOW_MS, NOW_MS, NOW_MS, ?)",
        (update_id, stack_id, kind, SUCCEEDED, version, created_by, resource_count),
    )
    return update_id


async def start(
    conn: Connection,
    update_id: str,
    version: int | None,
    lease_hash: str,
    lease_ms: int,
    *,
    journal_version: int = 0,
    client_version: str = "",
) -> int:
    """Mark a not-started update running with a new lease; returns the lease's expiry.

    Raises ``UniqueViolation`` if another non-preview update of the stack is running.
    """
    row = await conn.fetchone(
        "UPDATE updates SET status = ?, version = ?, started_at = NOW_MS, lease_hash = ?, "
        "lease_expires_at = NOW_MS + ?, journal_version = ?, client_version = ? "
        "WHERE id = ? AND status = ? RETURNING lease_expires_at",
        (
            RUNNING,
            version,
            lease_hash,
            lease_ms,
            journal_version,
            client_version,
            update_id,
            NOT_STARTED,
        ),
    )
    assert row is not None, "caller checked the status under the row lock"
    return int(row[0])


async def renew_lease(
    conn: Connection, update_id: str, lease_hash: str, lease_ms: int
) -> int | None:
    """Extend a live lease; returns the new expiry, or None if it is not live any more."""
    row = await conn.fetchone(
        "UPDATE updates SET lease_expires_at = NOW_MS + ? WHERE id = ? AND status = ? "
        "AND lease_hash = ? AND lease_expires_at > NOW_MS RETURNING lease_expires_at",
        (lease_ms, update_id, RUNNING, lease_hash),
    )
    return None if row is None else int(row[0])


async def end(
    conn: Connection,
    stack_id: str,
    before: Lifecycle,
    after: Lifecycle,
    *,
    lease_ended_ms: int | None = None,
    resource_changes: str | None = None,
    resource_count: int | None = None,
) -> bool:
    """Apply a step of ``procella.lifecycle`` that ends an update (``before`` -> ``after``,
    a terminal status): end its lease and release its stack. Returns False, changing
    nothing, if the update is no longer in ``before``'s status (compare-and-set), or,
    with ``lease_ended_ms``, if its lease did not end that long ago."""
    assert after.status in TERMINAL
    sql = (
        "UPDATE updates SET status = ?, ended_at = NOW_MS, lease_expires_at = NULL, "
        "resource_changes = COALESCE(?, resource_changes), "
        "resource_count = COALESCE(?, resource_count) WHERE id = ? AND status = ?"
    )
    params: list[object] = [
        after.status,
        resource_changes,
        resource_count,
        before.update_id,
        before.status,
    ]
    if lease_ended_ms is not None:
        sql += " AND lease_expires_at < NOW_MS - ?"
        params.append(lease_ended_ms)
    if await conn.execute(sql, params) != 1:
        return False
    if before.holds_stack:
        await conn.execute(
            "UPDATE stacks SET active_update_id = NULL WHERE id = ? AND active_update_id = ?",
            (stack_id, before.update_id),
        )
    return True


async def running_for_stack(conn: Connection, stack_id: str) -> UpdateRecord | None:
    """The running non-preview update of the stack, if any."""
    row = await conn.fetchone(
        f"SELECT {_COLUMNS} FROM updates u "
        "WHERE u.stack_id = ? AND u.status = ? AND u.is_preview = FALSE",
        (stack_id, RUNNING),
    )
    return None if row is None else _update(row)


async def history(conn: Connection, stack_id: str, limit: int, offset: int) -> list[UpdateRecord]:
    """Non-preview updates that took a version, newest first."""
    rows = await conn.fetchall(
        f"SELECT {_COLUMNS} FROM updates u WHERE u.stack_id = ? AND u.is_preview = FALSE "
        "AND u.version IS NOT NULL ORDER BY u.version DESC LIMIT ? OFFSET ?",
        (stack_id, limit, offset),
    )
    return [_update(r) for r in rows]


async def set_resource_count(conn: Connection, update_id: str, count: int | None) -> None:
    """Record the resources of an update's final state; ``-1`` when it has none to count
    (so it is not settled again)."""
    await conn.execute(
        "UPDATE updates SET resource_count = ? WHERE id = ? AND resource_count IS NULL",
        (-1 if count is None else count, update_id),
    )


async def unsettled(conn: Connection, stack_id: str | None, limit: int | None) -> list[str]:
    """Ids of frozen (ended or lease-expired) updates that took a version but whose final
    state was never counted: cancelled, abandoned, or journals not stored. Oldest first."""
    sql = (
        "SELECT u.id FROM updates u WHERE u.is_preview = FALSE AND u.version IS NOT NULL "
        "AND u.resource_count IS NULL AND (u.status IN (?, ?, ?) "
        "OR (u.status = ? AND u.lease_expires_at <= NOW_MS))"
    )
    params: list[object] = [*TERMINAL, RUNNING]
    if stack_id is not None:
        sql += " AND u.stack_id = ?"
        params.append(stack_id)
    sql += " ORDER BY u.stack_id, u.version"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return [str(r[0]) for r in await conn.fetchall(sql, params)]
