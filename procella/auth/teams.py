"""Teams: an org's admins group its members and grant them roles on projects and stacks.

Every change is one transaction with its audit entry, and clears this replica's principal
cache: the change takes effect here at once and on every other replica within
``PROCELLA_AUTH_CACHE_SECONDS``. ``principal`` None is the server's command line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from procella import audit
from procella.auth.models import Principal, Role, permission_name
from procella.auth.service import AuthService
from procella.errors import AlreadyExists, BadRequest, NotFound
from procella.metadata.base import Connection, MetadataStore, TokenRow, UniqueViolation
from procella.metadata.queries import auth as auth_q
from procella.metadata.queries import stacks as stack_q
from procella.metadata.queries import teams as team_q
from procella.stacks.models import check_org_name, check_project_name, check_stack_name

_TEAM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
MAX_DESCRIPTION = 1000


def check_team_name(name: str) -> str:
    if not _TEAM_NAME.fullmatch(name):
        raise BadRequest(
            f"invalid team name {name!r}: use 1-100 letters, digits, '-', '_' or '.', "
            "starting with a letter or digit"
        )
    return name


def check_description(text: str) -> str:
    if len(text) > MAX_DESCRIPTION or any(ord(c) < 32 and c not in "\n\t" for c in text):
        raise BadRequest(f"a description is at most {MAX_DESCRIPTION} printable characters")
    return text


@dataclass(frozen=True)
class TeamView:
    team: team_q.TeamRow
    members: list[str]
    grants: list[team_q.GrantRow]


@dataclass(frozen=True)
class Target:
    """What a grant is on: every stack of ``project``, or (``stack`` set) one stack."""

    project: str
    stack: str | None = None

    def __str__(self) -> str:
        return self.project if self.stack is None else f"{self.project}/{self.stack}"


class TeamService:
    def __init__(self, meta: MetadataStore, auth: AuthService) -> None:
        self.meta = meta
        self.auth = auth

    async def list_teams(self, principal: Principal | None, org: str) -> list[TeamView]:
        _admin(principal, org)
        async with self.meta.read() as conn:
            teams = await team_q.list_for_org(conn, org)
            return [await _view(conn, team) for team in teams]

    async def get(self, principal: Principal | None, org: str, name: str) -> TeamView:
        _admin(principal, org)
        async with self.meta.read() as conn:
            return await _view(conn, await _team(conn, org, name))

    async def create(
        self, principal: Principal | None, org: str, name: str, description: str = ""
    ) -> TeamView:
        _admin(principal, org)
        check_team_name(name)
        check_description(description)
        async with self.meta.transaction() as conn:
            org_id = await auth_q.org_id(conn, org)
            if org_id is None:
                raise NotFound(f"organization '{org}' not found")
            try:
                await team_q.insert(conn, org_id, name, description)
            except UniqueViolation:
                raise AlreadyExists(f"team '{name}' already exists in '{org}'") from None
            await audit.record(
                conn, org_id, principal, audit.TEAM_CREATE, f"team:{name}", f"created team {name}"
            )
            return await _view(conn, await _team(conn, org, name))

    async def set_description(
        self, principal: Principal | None, org: str, name: str, description: str
    ) -> None:
        _admin(principal, org)
        check_description(description)
        async with self.meta.transaction() as conn:
            team = await _team(conn, org, name, lock=True)
            await team_q.set_description(conn, team.id, description)
            await _record(conn, team, principal, audit.TEAM_UPDATE, "changed the description")

    async def delete(self, principal: Principal | None, org: str, name: str) -> None:
        """Delete the team: its members lose its grants, its tokens stop working."""
        _admin(principal, org)
        async with self.meta.transaction() as conn:
            team = await _team(conn, org, name, lock=True)
            await team_q.delete(conn, team.id)
            await auth_q.delete_user(conn, team_q.token_login(org, name))
            await audit.record(
                conn,
                team.org_id,
                principal,
                audit.TEAM_DELETE,
                f"team:{name}",
                f"deleted team {name} with its grants and tokens",
            )
        self.auth.cache.clear()

    async def add_member(
        self, principal: Principal | None, org: str, name: str, login: str
    ) -> None:
        """Add a member of the org (a user with a role in it) to the team."""
        _admin(principal, org)
        async with self.meta.transaction() as conn:
            team = await _team(conn, org, name, lock=True)
            user_id = await team_q.org_member_id(conn, team.org_id, login)
            if user_id is None:
                raise BadRequest(f"'{login}' is not a member of '{org}'")
            if not await team_q.add_member(conn, team.id, user_id):
                raise AlreadyExists(f"'{login}' is a member of team {name} already")
            await _record(conn, team, principal, audit.TEAM_MEMBER_ADD, f"added {login}")
        self.auth.cache.clear()

    async def remove_member(
        self, principal: Principal | None, org: str, name: str, login: str
    ) -> None:
        _admin(principal, org)
        async with self.meta.transaction() as conn:
            team = await _team(conn, org, name, lock=True)
            if not await team_q.remove_member(conn, team.id, login):
                raise NotFound(f"'{login}' is not a member of team {name}")
            await _record(conn, team, principal, audit.TEAM_MEMBER_REMOVE, f"removed {login}")
        self.auth.cache.clear()

    async def grant(
        self, principal: Principal | None, org: str, name: str, target: Target, role: Role
    ) -> None:
        """Give the team ``role`` on the target, replacing what it had there. A project
        need not have stacks yet; a stack must exist (the grant goes with it)."""
        _admin(principal, org)
        _check_target(target)
        async with self.meta.transaction() as conn:
            team = await _team(conn, org, name, lock=True)
            if target.stack is None:
                await team_q.set_project_grant(conn, team.id, target.project, _stored(role))
            else:
                stack_id = await _stack_id(conn, org, target)
                await team_q.set_stack_grant(conn, team.id, stack_id, _stored(role))
            what = f"granted {permission_name(role)} on {_described(target)}"
            await _record(conn, team, principal, audit.TEAM_GRANT_ADD, what)
        self.auth.cache.clear()

    async def revoke_grant(
        self, principal: Principal | None, org: str, name: str, target: Target
    ) -> None:
        _admin(principal, org)
        _check_target(target)
        async with self.meta.transaction() as conn:
            team = await _team(conn, org, name, lock=True)
            if target.stack is None:
                removed = await team_q.remove_project_grant(conn, team.id, target.project)
            else:
                stack_id = await _stack_id(conn, org, target)
                removed = await team_q.remove_stack_grant(conn, team.id, stack_id)
            if not removed:
                raise NotFound(f"team {name} has no grant on {_described(target)}")
            what = f"revoked its grant on {_described(target)}"
            await _record(conn, team, principal, audit.TEAM_GRANT_REMOVE, what)
        self.auth.cache.clear()

    async def list_tokens(self, principal: Principal | None, org: str, name: str) -> list[TokenRow]:
        _admin(principal, org)
        async with self.meta.read() as conn:
            team = await _team(conn, org, name)
            return await team_q.list_tokens(conn, team.id)

    async def revoke_token(
        self, principal: Principal | None, org: str, name: str, token_id: str
    ) -> None:
        _admin(principal, org)
        async with self.meta.transaction() as conn:
            team = await _team(conn, org, name)
            found = await team_q.list_tokens(conn, team.id, token_id)
            if not found or not await auth_q.revoke_token(conn, token_id):
                raise NotFound(f"token '{token_id}' not found, or revoked already")
            await audit.record(
                conn,
                team.org_id,
                principal,
                audit.TOKEN_REVOKE,
                f"team:{name}",
                f"revoked token {found[0].name!r} of team {name}",
            )
        self.auth.cache.clear()


def _admin(principal: Principal | None, org: str) -> None:
    check_org_name(org)
    if principal is not None:
        principal.require(org, Role.ADMIN)


async def _team(conn: Connection, org: str, name: str, *, lock: bool = False) -> team_q.TeamRow:
    found = await team_q.get(conn, org, check_team_name(name), lock=lock)
    if found is None:
        raise NotFound(f"team '{name}' not found in '{org}'")
    return found


async def _view(conn: Connection, team: team_q.TeamRow) -> TeamView:
    members = await team_q.members(conn, team.id)
    return TeamView(team, members, await team_q.grants_of_team(conn, team.id))


async def _stack_id(conn: Connection, org: str, target: Target) -> str:
    assert target.stack is not None
    stack = await stack_q.get(conn, org, target.project, target.stack)
    if stack is None:
        raise NotFound(f"Stack '{org}/{target}' not found")
    return stack.id


async def _record(
    conn: Connection,
    team: team_q.TeamRow,
    principal: Principal | None,
    action: str,
    what: str,
) -> None:
    await audit.record(
        conn, team.org_id, principal, action, f"team:{team.name}", f"team {team.name}: {what}"
    )


def _check_target(target: Target) -> None:
    check_project_name(target.project)
    if target.stack is not None:
        check_stack_name(target.stack)


def _described(target: Target) -> str:
    return f"project {target}" if target.stack is None else f"stack {target}"


def _stored(role: Role) -> str:
    return role.name.lower()
