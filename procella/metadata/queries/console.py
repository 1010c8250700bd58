"""Reads the web console needs that no API route makes: an update by its stack version, and
the newest update of many stacks at once (the org page)."""

from __future__ import annotations

from collections.abc import Sequence

from procella.metadata.base import Connection, UpdateRecord
from procella.metadata.queries.updates import _COLUMNS, _update


async def update_at_version(conn: Connection, stack_id: str, version: int) -> UpdateRecord | None:
    """The non-preview update (or rename, import) that took ``version`` of the stack."""
    row = await conn.fetchone(
        f"SELECT {_COLUMNS} FROM updates u WHERE u.stack_id = ? AND u.version = ? "
        "AND u.is_preview = FALSE",
        (stack_id, version),
    )
    return None if row is None else _update(row)


async def latest_updates(conn: Connection, stack_ids: Sequence[str]) -> dict[str, UpdateRecord]:
    """Each stack's newest non-preview update, for stacks that have one (one statement for
    a page of stacks, not one per stack)."""
    if not stack_ids:
        return {}
    marks = ", ".join("?" for _ in stack_ids)
    rows = await conn.fetchall(
        f"SELECT {_COLUMNS} FROM updates u WHERE u.stack_id IN ({marks}) "
        "AND u.is_preview = FALSE AND u.version = (SELECT MAX(v.version) FROM updates v "
        "WHERE v.stack_id = u.stack_id AND v.is_preview = FALSE)",
        list(stack_ids),
    )
    found = [_update(r) for r in rows]
    return {u.stack_id: u for u in found}


async def recent_previews(conn: Connection, stack_id: str, limit: int) -> list[UpdateRecord]:
    """The stack's newest previews (they take no version, so the history omits them)."""
    rows = await conn.fetchall(
        f"SELECT {_COLUMNS} FROM updates u WHERE u.stack_id = ? AND u.is_preview = TRUE "
        "ORDER BY u.created_at DESC LIMIT ?",
        (stack_id, limit),
    )
    return [_update(r) for r in rows]


async def tags_of(conn: Connection, stack_ids: Sequence[str]) -> dict[str, dict[str, str]]:
    """The tags of each stack (stacks without tags are absent)."""
    if not stack_ids:
        return {}
    marks = ", ".join("?" for _ in stack_ids)
    rows = await conn.fetchall(
        f"SELECT stack_id, name, value FROM stack_tags WHERE stack_id IN ({marks}) "
        "ORDER BY stack_id, name",
        list(stack_ids),
    )
    found: dict[str, dict[str, str]] = {}
    for stack_id, name, value in rows:
        found.setdefault(str(stack_id), {})[str(name)] = str(value)
    return found
