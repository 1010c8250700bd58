"""The audit log: one row per state-changing action, newest last (``id`` only grows)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from procella.metadata.base import AuditEntry, AuditFilter, Connection

_COLUMNS = "login, token_name, source_ip, request_id, action, target, description, at"


@dataclass(frozen=True)
class Who:
    """Who acted, from where, in which request."""

    login: str
    token_name: str
    source_ip: str
    request_id: str


async def insert(
    conn: Connection, org_id: str | None, who: Who, action: str, target: str, description: str
) -> None:
    await conn.execute(
        f"INSERT INTO audit_log (org_id, {_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NOW_MS)",
        (org_id, *_values(who), action, target, description),
    )


async def insert_for_stack(
    conn: Connection, stack_id: str, who: Who, action: str, description: str
) -> None:
    """An entry on a stack, named ``project/stack`` in its org, as it is named now."""
    await conn.execute(
        f"INSERT INTO audit_log (org_id, {_COLUMNS}) "
        "SELECT org_id, ?, ?, ?, ?, ?, project || '/' || name, ?, NOW_MS FROM stacks WHERE id = ?",
        (*_values(who), action, description, stack_id),
    )


async def page(
    conn: Connection, f: AuditFilter, before_id: int | None, limit: int
) -> list[AuditEntry]:
    """Up to ``limit`` entries, newest first, older than entry ``before_id``."""
    where, params = ["1 = 1"], []
    conditions: list[tuple[str, Any]] = [
        ("o.name = ?", f.org),
        ("a.action = ?", f.action),
        ("a.login = ?", f.login),
        ("a.at >= ?", f.since_ms),
        ("a.at <= ?", f.until_ms),
        ("a.id < ?", before_id),
    ]
    for condition, value in conditions:
        if value is not None:
            where.append(condition)
            params.append(value)
    rows = await conn.fetchall(
        "SELECT a.id, o.name, a.at, a.action, a.login, a.token_name, a.source_ip, "
        "a.request_id, a.target, a.description FROM audit_log a "
        f"LEFT JOIN orgs o ON o.id = a.org_id WHERE {' AND '.join(where)} "
        "ORDER BY a.id DESC LIMIT ?",
        [*params, limit],
    )
    return [AuditEntry(int(r[0]), r[1], int(r[2]), *(str(v) for v in r[3:])) for r in rows]


async def prune(conn: Connection, age_ms: int) -> int:
    """Delete the entries older than ``age_ms``."""
    return await conn.execute("DELETE FROM audit_log WHERE at < NOW_MS - ?", (age_ms,))


def _values(who: Who) -> tuple[str, str, str, str]:
    return (who.login, who.token_name, who.source_ip, who.request_id)
