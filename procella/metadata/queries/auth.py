"""Users, organizations, memberships and API tokens."""

from __future__ import annotations

from procella.metadata.base import Connection, PrincipalRecord
from procella.metadata.queries import new_id


async def principal_by_token_hash(conn: Connection, token_hash: str) -> PrincipalRecord | None:
    """The token's user and their roles, in one query (every API call makes it)."""
    rows = await conn.fetchall(
        "SELECT u.id, u.login, u.site_admin, t.name, o.name, m.role FROM api_tokens t "
        "JOIN users u ON u.id = t.user_id "
        "LEFT JOIN memberships m ON m.user_id = u.id LEFT JOIN orgs o ON o.id = m.org_id "
        "WHERE t.token_hash = ? ORDER BY m.created_at, o.name",
        (token_hash,),
    )
    if not rows:
        return None
    user_id, login, site_admin, token_name = rows[0][:4]
    roles = {org: role for *_, org, role in rows if org is not None}
    return PrincipalRecord(user_id, login, bool(site_admin), token_name, roles)


async def org_id(conn: Connection, name: str) -> str | None:
    row = await conn.fetchone("SELECT id FROM orgs WHERE name = ?", (name,))
    return None if row is None else str(row[0])


async def ensure_org(conn: Connection, name: str) -> str:
    """The id of org ``name``, created if missing (safe against a concurrent creator)."""
    await conn.execute(
        "INSERT INTO orgs (id, name, created_at) VALUES (?, ?, NOW_MS) "
        "ON CONFLICT (name) DO NOTHING",
        (new_id(), name),
    )
    found = await org_id(conn, name)
    assert found is not None
    return found


async def list_org_names(conn: Connection) -> list[str]:
    return [str(r[0]) for r in await conn.fetchall("SELECT name FROM orgs ORDER BY name")]


async def ensure_user(conn: Connection, login: str, *, site_admin: bool = False) -> str:
    await conn.execute(
        "INSERT INTO users (id, login, site_admin, created_at) VALUES (?, ?, ?, NOW_MS) "
        "ON CONFLICT (login) DO NOTHING",
        (new_id(), login, site_admin),
    )
    if site_admin:
        await conn.execute("UPDATE users SET site_admin = TRUE WHERE login = ?", (login,))
    row = await conn.fetchone("SELECT id FROM users WHERE login = ?", (login,))
    assert row is not None
    return str(row[0])


async def set_membership(conn: Connection, user_id: str, org_id: str, role: str) -> None:
    await conn.execute(
        "INSERT INTO memberships (user_id, org_id, role, created_at) VALUES (?, ?, ?, NOW_MS) "
        "ON CONFLICT (user_id, org_id) DO UPDATE SET role = excluded.role",
        (user_id, org_id, role),
    )


async def token_hash_named(conn: Connection, user_id: str, name: str) -> str | None:
    row = await conn.fetchone(
        "SELECT token_hash FROM api_tokens WHERE user_id = ? AND name = ?", (user_id, name)
    )
    return None if row is None else str(row[0])


async def insert_token(conn: Connection, user_id: str, name: str, token_hash: str) -> None:
    await conn.execute(
        "INSERT INTO api_tokens (id, token_hash, user_id, name, created_at) "
        "VALUES (?, ?, ?, ?, NOW_MS)",
        (new_id(), token_hash, user_id, name),
    )


async def replace_token(conn: Connection, user_id: str, name: str, token_hash: str) -> None:
    """Make ``token_hash`` the only token called ``name`` of the user."""
    await conn.execute("DELETE FROM api_tokens WHERE user_id = ? AND name = ?", (user_id, name))
    await insert_token(conn, user_id, name, token_hash)
