"""Stacks and their tags."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from procella.metadata.base import Connection, Row, StackRecord, StackSummaryRow

_STACK_COLUMNS = (
    "s.id, s.org_id, o.name, s.project, s.name, s.version, s.active_update_id, "
    "s.created_at, s.last_update_at"
)
_STACK_FROM = "FROM stacks s JOIN orgs o ON o.id = s.org_id"
# Derived, never stored twice: the resource count of the stack's newest checkpoint.
_RESOURCE_COUNT = (
    "COALESCE((SELECT c.resource_count FROM checkpoints c WHERE c.stack_id = s.id "
    "ORDER BY c.version DESC LIMIT 1), 0)"
)


def _stack(row: Row) -> StackRecord:
    return StackRecord(
        id=row[0],
        org_id=row[1],
        org=row[2],
        project=row[3],
        name=row[4],
        version=int(row[5]),
        active_update_id=row[6],
        created_at=int(row[7]),
        last_update_at=None if row[8] is None else int(row[8]),
    )


async def get(
    conn: Connection, org: str, project: str, name: str, *, lock: bool = False
) -> StackRecord | None:
    """The stack ``org/project/name``; ``lock`` holds its row until the transaction ends."""
    sql = f"SELECT {_STACK_COLUMNS} {_STACK_FROM} WHERE o.name = ? AND s.project = ? AND s.name = ?"
    if lock:
        sql += " FOR UPDATE OF s"
    row = await conn.fetchone(sql, (org, project, name))
    return None if row is None else _stack(row)


@dataclass(frozen=True)
class StackViewRow:
    """A stack, its tags and its running update (kind, author, start), in one row."""

    stack: StackRecord
    tags: dict[str, str]
    running: tuple[str, str, int | None] | None


# The tags as one JSON object, aggregated where the row is read (each dialect's spelling).
_TAGS_JSON = {
    "sqlite": "json_group_object(t.name, t.value)",
    "postgres": "json_object_agg(t.name, t.value)::text",
}


async def view(conn: Connection, org: str, project: str, name: str) -> StackViewRow | None:
    """What ``GET STACK`` shows, in one statement: it is the most frequent read."""
    tags = f"(SELECT {_TAGS_JSON[conn.dialect]} FROM stack_tags t WHERE t.stack_id = s.id)"
    row = await conn.fetchone(
        f"SELECT {_STACK_COLUMNS}, {tags}, u.kind, u.created_by, u.started_at {_STACK_FROM} "
        "LEFT JOIN updates u ON u.id = s.active_update_id "
        "WHERE o.name = ? AND s.project = ? AND s.name = ?",
        (org, project, name),
    )
    if row is None:
        return None
    found = json.loads(row[9]) if row[9] else {}
    running = None
    if row[10] is not None:
        running = (str(row[10]), str(row[11]), None if row[12] is None else int(row[12]))
    tag_map = {str(k): str(v) for k, v in sorted(found.items())}
    return StackViewRow(_stack(row), tag_map, running)


async def get_by_id(conn: Connection, stack_id: str, *, lock: bool = False) -> StackRecord | None:
    sql = f"SELECT {_STACK_COLUMNS} {_STACK_FROM} WHERE s.id = ?"
    if lock:
        sql += " FOR UPDATE OF s"
    row = await conn.fetchone(sql, (stack_id,))
    return None if row is None else _stack(row)


async def insert(conn: Connection, stack_id: str, org_id: str, project: str, name: str) -> None:
    """Create a stack row; raises ``UniqueViolation`` when the name is taken."""
    await conn.execute(
        "INSERT INTO stacks (id, org_id, project, name, created_at) VALUES (?, ?, ?, ?, NOW_MS)",
        (stack_id, org_id, project, name),
    )


async def delete(conn: Connection, stack_id: str) -> None:
    """Delete the stack and, by cascade, its tags, updates, events and checkpoint rows."""
    await conn.execute("DELETE FROM stacks WHERE id = ?", (stack_id,))


async def rename(conn: Connection, stack_id: str, project: str, name: str) -> None:
    await conn.execute(
        "UPDATE stacks SET project = ?, name = ? WHERE id = ?", (project, name, stack_id)
    )


async def project_exists(conn: Connection, org: str, project: str) -> bool:
    row = await conn.fetchone(
        f"SELECT 1 {_STACK_FROM} WHERE o.name = ? AND s.project = ? LIMIT 1", (org, project)
    )
    return row is not None


async def tags(conn: Connection, stack_id: str) -> dict[str, str]:
    rows = await conn.fetchall(
        "SELECT name, value FROM stack_tags WHERE stack_id = ? ORDER BY name", (stack_id,)
    )
    return {str(k): str(v) for k, v in rows}


async def replace_tags(conn: Connection, stack_id: str, new_tags: dict[str, str]) -> None:
    await conn.execute("DELETE FROM stack_tags WHERE stack_id = ?", (stack_id,))
    if new_tags:
        await conn.executemany(
            "INSERT INTO stack_tags (stack_id, name, value) VALUES (?, ?, ?)",
            [(stack_id, k, v) for k, v in new_tags.items()],
        )


async def set_active_update(conn: Connection, stack_id: str, update_id: str | None) -> None:
    await conn.execute("UPDATE stacks SET active_update_id = ? WHERE id = ?", (update_id, stack_id))


async def clear_active_update(conn: Connection, stack_id: str, update_id: str) -> None:
    """Release the stack, but only if ``update_id`` is still the one holding it."""
    await conn.execute(
        "UPDATE stacks SET active_update_id = NULL WHERE id = ? AND active_update_id = ?",
        (stack_id, update_id),
    )


async def next_version(conn: Connection, stack_id: str) -> int:
    """Take the stack's next version number (the caller holds the stack row)."""
    row = await conn.fetchone(
        "UPDATE stacks SET version = version + 1 WHERE id = ? RETURNING version", (stack_id,)
    )
    assert row is not None
    return int(row[0])


async def record_update_time(conn: Connection, stack_id: str) -> None:
    """Note that an operation on the stack ended now (``lastUpdate`` in listings)."""
    await conn.execute("UPDATE stacks SET last_update_at = NOW_MS WHERE id = ?", (stack_id,))


@dataclass(frozen=True)
class StackFilter:
    """The filters of ``GET /api/user/stacks``; None means "any"."""

    member_user_id: str | None  # only stacks this user may read; None for site admins
    org: str | None = None
    project: str | None = None
    tag_name: str | None = None
    tag_value: str | None = None
    team_id: str | None = None  # a team token's team: only the stacks its grants cover


# A grant (of team ``g``) covers the stack: it names the stack, or the stack's project.
_COVERED = (
    "JOIN teams gt ON gt.id = g.team_id WHERE gt.org_id = s.org_id "
    "AND (g.stack_id = s.id OR (g.stack_id IS NULL AND g.project = s.project))"
)


async def list_page(
    conn: Connection, f: StackFilter, after: tuple[str, str, str] | None, limit: int
) -> list[StackSummaryRow]:
    """One page of stacks in (org, project, name) order, strictly after ``after``."""
    where: list[str] = []
    params: list[Any] = []
    if after is not None:
        where.append("(o.name, s.project, s.name) > (?, ?, ?)")
        params.extend(after)
    if f.team_id is not None:
        where.append(f"EXISTS (SELECT 1 FROM team_grants g {_COVERED} AND g.team_id = ?)")
        params.append(f.team_id)
    elif f.member_user_id is not None:
        # Every stack of the user's orgs (any org role reads them all), and those the
        # grants of the user's teams cover.
        where.append(
            "(s.org_id IN (SELECT org_id FROM memberships WHERE user_id = ?) OR EXISTS "
            "(SELECT 1 FROM team_members tm JOIN team_grants g ON g.team_id = tm.team_id "
            f"{_COVERED} AND tm.user_id = ?))"
        )
        params.extend([f.member_user_id, f.member_user_id])
    if f.org is not None:
        where.append("o.name = ?")
        params.append(f.org)
    if f.project is not None:
        where.append("s.project = ?")
        params.append(f.project)
    if f.tag_name is not None:
        tag_sql = "EXISTS (SELECT 1 FROM stack_tags t WHERE t.stack_id = s.id AND t.name = ?"
        params.append(f.tag_name)
        if f.tag_value is not None:
            tag_sql += " AND t.value = ?"
            params.append(f.tag_value)
        where.append(tag_sql + ")")
    sql = (
        f"SELECT s.id, o.name, s.project, s.name, s.last_update_at, {_RESOURCE_COUNT} {_STACK_FROM}"
        + (" WHERE " + " AND ".join(where) if where else "")
        + " ORDER BY o.name, s.project, s.name LIMIT ?"
    )
    params.append(limit)
    rows: Sequence[Row] = await conn.fetchall(sql, params)
    return [
        StackSummaryRow(r[0], r[1], r[2], r[3], None if r[4] is None else int(r[4]), int(r[5]))
        for r in rows
    ]
