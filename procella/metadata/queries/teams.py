"""Teams: their members, their grants (a role on a project or on one stack) and tokens."""

from __future__ import annotations

from dataclasses import dataclass

from procella.metadata.base import Connection, TokenRow
from procella.metadata.queries import new_id


@dataclass(frozen=True)
class TeamRow:
    id: str
    org_id: str
    org: str
    name: str
    description: str
    created_at: int


@dataclass(frozen=True)
class GrantRow:
    """A grant as stored, with the names of what it covers as they are now."""

    team: str
    org: str
    project: str  # the project granted, or the stack's current project
    stack: str | None  # None: the whole project
    role: str


_TEAM = (
    "SELECT t.id, t.org_id, o.name, t.name, t.description, t.created_at "
    "FROM teams t JOIN orgs o ON o.id = t.org_id"
)


async def get(conn: Connection, org: str, name: str, *, lock: bool = False) -> TeamRow | None:
    sql = f"{_TEAM} WHERE o.name = ? AND t.name = ?"
    row = await conn.fetchone(sql + (" FOR UPDATE OF t" if lock else ""), (org, name))
    return None if row is None else TeamRow(*row)


async def list_for_org(conn: Connection, org: str) -> list[TeamRow]:
    rows = await conn.fetchall(f"{_TEAM} WHERE o.name = ? ORDER BY t.name", (org,))
    return [TeamRow(*row) for row in rows]


async def insert(conn: Connection, org_id: str, name: str, description: str) -> str:
    """A new team; a name the org has already is a UniqueViolation."""
    team_id = new_id()
    await conn.execute(
        "INSERT INTO teams (id, org_id, name, description, created_at) VALUES (?, ?, ?, ?, NOW_MS)",
        (team_id, org_id, name, description),
    )
    return team_id


async def set_description(conn: Connection, team_id: str, description: str) -> None:
    await conn.execute("UPDATE teams SET description = ? WHERE id = ?", (description, team_id))


async def delete(conn: Connection, team_id: str) -> None:
    """Delete a team with its members, grants and tokens (by cascade)."""
    await conn.execute("DELETE FROM teams WHERE id = ?", (team_id,))


# Members ------------------------------------------------------------------------------


async def members(conn: Connection, team_id: str) -> list[str]:
    rows = await conn.fetchall(
        "SELECT u.login FROM team_members m JOIN users u ON u.id = m.user_id "
        "WHERE m.team_id = ? ORDER BY u.login",
        (team_id,),
    )
    return [str(r[0]) for r in rows]


async def org_member_id(conn: Connection, org_id: str, login: str) -> str | None:
    """The user id of ``login`` if they belong to the org (hold a role in it)."""
    row = await conn.fetchone(
        "SELECT u.id FROM users u JOIN memberships m ON m.user_id = u.id "
        "WHERE u.login = ? AND m.org_id = ?",
        (login, org_id),
    )
    return None if row is None else str(row[0])


async def add_member(conn: Connection, team_id: str, user_id: str) -> bool:
    """Add a member; False if they were one already."""
    changed = await conn.execute(
        "INSERT INTO team_members (team_id, user_id, created_at) VALUES (?, ?, NOW_MS) "
        "ON CONFLICT (team_id, user_id) DO NOTHING",
        (team_id, user_id),
    )
    return changed == 1


async def remove_member(conn: Connection, team_id: str, login: str) -> bool:
    changed = await conn.execute(
        "DELETE FROM team_members WHERE team_id = ? "
        "AND user_id = (SELECT id FROM users WHERE login = ?)",
        (team_id, login),
    )
    return changed == 1


# Grants -------------------------------------------------------------------------------

# A grant's org, project and stack, as they are now (a stack may have been renamed).
_GRANTS = (
    "SELECT t.name, o.name, COALESCE(g.project, s.project), s.name, g.role "
    "FROM team_grants g JOIN teams t ON t.id = g.team_id JOIN orgs o ON o.id = t.org_id "
    "LEFT JOIN stacks s ON s.id = g.stack_id"
)
_GRANT_ORDER = " ORDER BY t.name, COALESCE(g.project, s.project), s.name"


async def grants_of_team(conn: Connection, team_id: str) -> list[GrantRow]:
    rows = await conn.fetchall(f"{_GRANTS} WHERE g.team_id = ?{_GRANT_ORDER}", (team_id,))
    return [GrantRow(*row) for row in rows]


async def grants_of_user(conn: Connection, user_id: str) -> list[GrantRow]:
    """The grants of every team the user is a member of."""
    rows = await conn.fetchall(
        f"{_GRANTS} JOIN team_members m ON m.team_id = g.team_id WHERE m.user_id = ?{_GRANT_ORDER}",
        (user_id,),
    )
    return [GrantRow(*row) for row in rows]


async def set_project_grant(conn: Connection, team_id: str, project: str, role: str) -> None:
    """Give the team ``role`` on every stack of ``project`` (replacing its grant there)."""
    await remove_project_grant(conn, team_id, project)
    await conn.execute(
        "INSERT INTO team_grants (id, team_id, project, stack_id, role, created_at) "
        "VALUES (?, ?, ?, NULL, ?, NOW_MS)",
        (new_id(), team_id, project, role),
    )


async def set_stack_grant(conn: Connection, team_id: str, stack_id: str, role: str) -> None:
    await remove_stack_grant(conn, team_id, stack_id)
    await conn.execute(
        "INSERT INTO team_grants (id, team_id, project, stack_id, role, created_at) "
        "VALUES (?, ?, NULL, ?, ?, NOW_MS)",
        (new_id(), team_id, stack_id, role),
    )


async def remove_project_grant(conn: Connection, team_id: str, project: str) -> bool:
    changed = await conn.execute(
        "DELETE FROM team_grants WHERE team_id = ? AND project = ? AND stack_id IS NULL",
        (team_id, project),
    )
    return changed == 1


async def remove_stack_grant(conn: Connection, team_id: str, stack_id: str) -> bool:
    changed = await conn.execute(
        "DELETE FROM team_grants WHERE team_id = ? AND stack_id = ?", (team_id, stack_id)
    )
    return changed == 1


# Tokens -------------------------------------------------------------------------------


# The logins of team tokens' user rows start so; people's logins cannot (a colon).
TOKEN_LOGIN_PREFIX = "team:"


def token_login(org: str, team: str) -> str:
    """The login a team's tokens are recorded under (in the audit log, in update history)."""
    return f"{TOKEN_LOGIN_PREFIX}{org}/{team}"


async def list_tokens(
    conn: Connection, team_id: str, token_id: str | None = None
) -> list[TokenRow]:
    sql = (
        "SELECT t.id, u.login, t.name, t.description, t.created_at, t.expires_at, "
        "t.last_used_at, t.revoked_at, NULL FROM api_tokens t JOIN users u ON u.id = t.user_id "
        "WHERE t.team_id = ?"
    )
    params: list[object] = [team_id]
    if token_id is not None:
        sql += " AND t.id = ?"
        params.append(token_id)
    rows = await conn.fetchall(sql + " ORDER BY t.created_at, t.id", params)
    return [TokenRow(*row) for row in rows]
