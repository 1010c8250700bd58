"""Users, organizations, memberships and API tokens."""

from __future__ import annotations

from procella.metadata.base import Connection, PrincipalRecord, TokenRow
from procella.metadata.queries import new_id


async def principal_by_token_hash(conn: Connection, token_hash: str) -> PrincipalRecord | None:
    """The user of a live token (not revoked, not expired) and their roles, or the team of a
    team token, in one query (every API call that misses the principal cache makes it,
    and one more for the grants of the teams: ``teams.grants_of_user``/``_of_team``)."""
    rows = await conn.fetchall(
        "SELECT u.id, u.login, u.site_admin, t.name, t.id, t.expires_at, t.last_used_at, "
        "tm.id, tmo.name, tm.name, o.name, m.role FROM api_tokens t "
        "JOIN users u ON u.id = t.user_id "
        "LEFT JOIN teams tm ON tm.id = t.team_id LEFT JOIN orgs tmo ON tmo.id = tm.org_id "
        "LEFT JOIN memberships m ON m.user_id = u.id LEFT JOIN orgs o ON o.id = m.org_id "
        "WHERE t.token_hash = ? AND t.revoked_at IS NULL "
        "AND (t.expires_at IS NULL OR t.expires_at > NOW_MS) ORDER BY m.created_at, o.name",
        (token_hash,),
    )
    if not rows:
        return None
    user_id, login, site_admin, token_name, token_id, expires_at, last_used_at = rows[0][:7]
    team_id, team_org, team_name = rows[0][7:10]
    roles = {org: role for *_, org, role in rows if org is not None}
    team = None if team_id is None else (str(team_id), str(team_org), str(team_name))
    return PrincipalRecord(
        user_id,
        login,
        bool(site_admin),
        token_name,
        roles,
        token_id,
        expires_at,
        last_used_at,
        team,
    )


async def touch_token(conn: Connection, token_id: str) -> None:
    """Record a use of the token, unless one was recorded in the last minute."""
    await conn.execute(
        "UPDATE api_tokens SET last_used_at = NOW_MS WHERE id = ? "
        "AND (last_used_at IS NULL OR last_used_at < NOW_MS - 60000)",
        (token_id,),
    )


async def list_tokens(
    conn: Connection, org: str | None = None, login: str | None = None, token_id: str | None = None
) -> list[TokenRow]:
    """Tokens of the members of ``org`` (with their role there), of ``login``, the one with
    ``token_id``, or all."""
    sql = (
        "SELECT t.id, u.login, t.name, t.description, t.created_at, t.expires_at, "
        "t.last_used_at, t.revoked_at, m.role FROM api_tokens t JOIN users u ON u.id = t.user_id "
    )
    params: list[object] = []
    if org is not None:
        sql += (
            "JOIN memberships m ON m.user_id = u.id JOIN orgs o ON o.id = m.org_id WHERE o.name = ?"
        )
        params.append(org)
    else:
        sql = sql.replace("m.role", "NULL")
        sql += "WHERE 1 = 1"
    if login is not None:
        sql += " AND u.login = ?"
        params.append(login)
    if token_id is not None:
        sql += " AND t.id = ?"
        params.append(token_id)
    rows = await conn.fetchall(sql + " ORDER BY t.created_at, t.id", params)
    return [TokenRow(*row) for row in rows]


async def revoke_token(conn: Connection, token_id: str) -> bool:
    """Revoke a live token; False if there is none by that id (or it is revoked already)."""
    changed = await conn.execute(
        "UPDATE api_tokens SET revoked_at = NOW_MS WHERE id = ? AND revoked_at IS NULL",
        (token_id,),
    )
    return changed == 1


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


async def insert_token(
    conn: Connection,
    user_id: str,
    name: str,
    token_hash: str,
    *,
    description: str = "",
    expires_at: int | None = None,
    team_id: str | None = None,
    oidc_issuer_id: str | None = None,
) -> str:
    """Store a token (its hash); its id. A name the user has already is a UniqueViolation.
    With ``team_id``, a team token: it acts as that team."""
    token_id = new_id()
    await conn.execute(
        "INSERT INTO api_tokens (id, token_hash, user_id, name, created_at, description, "
        "expires_at, team_id, oidc_issuer_id) VALUES (?, ?, ?, ?, NOW_MS, ?, ?, ?, ?)",
        (token_id, token_hash, user_id, name, description, expires_at, team_id, oidc_issuer_id),
    )
    return token_id


async def replace_token(conn: Connection, user_id: str, name: str, token_hash: str) -> None:
    """Make ``token_hash`` the only token called ``name`` of the user."""
    await conn.execute("DELETE FROM api_tokens WHERE user_id = ? AND name = ?", (user_id, name))
    await insert_token(conn, user_id, name, token_hash)


async def role_of(conn: Connection, login: str, org: str) -> str | None:
    """``login``'s role in ``org``, or None if they are not a member."""
    row = await conn.fetchone(
        "SELECT m.role FROM memberships m JOIN users u ON u.id = m.user_id "
        "JOIN orgs o ON o.id = m.org_id WHERE u.login = ? AND o.name = ?",
        (login, org),
    )
    return None if row is None else str(row[0])


async def delete_user(conn: Connection, login: str) -> None:
    """Delete a user with their tokens and memberships (by cascade)."""
    await conn.execute("DELETE FROM users WHERE login = ?", (login,))
