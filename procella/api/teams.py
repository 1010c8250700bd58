"""An org's teams, for its admins: ``/api/orgs/<org>/teams``, shaped as Pulumi Cloud's.

``GET`` lists the teams; ``POST`` (also at ``.../teams/pulumi``, Pulumi's path) creates
one from ``{"name", "description"}``; ``GET .../<team>`` shows one; ``DELETE`` deletes it.
``PATCH .../<team>`` makes one change, named by its key as in Pulumi's API:
``{"newDescription"}``, ``{"memberAction": "add"|"remove", "member": login}``,
``{"addStackPermission": {"projectName", "stackName", "permission"}}``,
``{"removeStack": {"projectName", "stackName"}}``, and Procella's project grants
``{"addProjectPermission": {"projectName", "permission"}}``, ``{"removeProject":
{"projectName"}}``. A permission is 101 (read), 102 (write) or 103 (admin), or that word.

Team tokens: ``.../<team>/tokens``: ``POST {"name", "description", "expires"}`` answers
the secret once, ``GET`` lists them (never a secret), ``DELETE .../<id>`` revokes one.
"""

from __future__ import annotations

import time
from typing import Any

from quart import Response

from procella.api.auth import principal
from procella.api.body import field, read_json, require_object
from procella.api.context import services
from procella.api.responses import json_response, no_content
from procella.api.tokens import MAX_SECONDS, text_field, token_info
from procella.auth.models import PERMISSIONS, Principal, Role
from procella.auth.teams import Target, TeamView, check_team_name
from procella.errors import BadRequest
from procella.stacks.models import check_org_name

# Pulumi's numbers for stack permissions (apitype StackPermission); 0 (none) and 104
# (Pulumi's "admin of the stack's deployments") are not grants here.
PERMISSION_CODES: dict[int, Role] = {101: Role.VIEWER, 102: Role.MEMBER, 103: Role.ADMIN}
ROLE_CODES = {role: code for code, role in PERMISSION_CODES.items()}

# The changes one PATCH may make: exactly one of these keys (the description keys are one).
_CHANGES = (
    ("newDescription", "newDisplayName"),
    ("memberAction",),
    ("addStackPermission",),
    ("removeStack",),
    ("addProjectPermission",),
    ("removeProject",),
)


async def _admin(org: str) -> Principal:
    """The caller, if an admin of ``org``: checked before a body is read."""
    caller = await principal()
    check_org_name(org)
    caller.require(org, Role.ADMIN)
    return caller


async def _body() -> dict[str, Any]:
    return require_object(await read_json(services().settings.max_inflated_bytes))


async def list_teams(org: str) -> Response:
    caller = await _admin(org)
    views = await services().teams.list_teams(caller, org)
    return json_response({"teams": [team_json(view) for view in views]})


async def create_team(org: str) -> Response:
    caller = await _admin(org)
    body = await _body()
    kind = field(body, "teamType", str, required=False)
    if kind not in (None, "", "pulumi"):
        raise BadRequest("only teams of type 'pulumi' (membership kept here) are supported")
    name = check_team_name(field(body, "name", str))
    description = field(body, "description", str, required=False) or ""
    view = await services().teams.create(caller, org, name, description)
    return json_response(team_json(view), status=201)


async def get_team(org: str, team: str) -> Response:
    caller = await _admin(org)
    return json_response(team_json(await services().teams.get(caller, org, team)))


async def update_team(org: str, team: str) -> Response:
    caller = await _admin(org)
    body = await _body()
    change = _change_of(body)
    teams = services().teams
    if change == "newDescription":
        description = field(body, "newDescription", str, required=False)
        if description is None:
            raise BadRequest("only the description of a team can change ('newDescription')")
        await teams.set_description(caller, org, team, description)
    elif change == "memberAction":
        await _change_member(caller, org, team, body)
    else:
        await _change_grant(caller, org, team, change, require_object(body[change], change))
    return json_response(team_json(await teams.get(caller, org, team)))


def _change_of(body: dict[str, Any]) -> str:
    """The one change a PATCH asks for (the first key of its group in ``_CHANGES``)."""
    present = [keys for keys in _CHANGES if any(k in body for k in keys)]
    if len(present) != 1:
        names = ", ".join(keys[0] for keys in _CHANGES)
        raise BadRequest(f"a team update makes exactly one change, one of: {names}")
    return present[0][0]


async def _change_member(caller: Principal, org: str, team: str, body: dict[str, Any]) -> None:
    action = field(body, "memberAction", str)
    login = field(body, "member", str)
    if action == "add":
        await services().teams.add_member(caller, org, team, login)
    elif action == "remove":
        await services().teams.remove_member(caller, org, team, login)
    else:
        raise BadRequest("field 'memberAction' must be 'add' or 'remove'")


async def _change_grant(
    caller: Principal, org: str, team: str, change: str, value: dict[str, Any]
) -> None:
    target = _target(value, stack=change in ("addStackPermission", "removeStack"))
    if change.startswith("add"):
        role = parse_permission(value.get("permission"))
        await services().teams.grant(caller, org, team, target, role)
    else:
        await services().teams.revoke_grant(caller, org, team, target)


async def delete_team(org: str, team: str) -> Response:
    caller = await _admin(org)
    await services().teams.delete(caller, org, team)
    return no_content()


# Team tokens -------------------------------------------------------------------------


async def list_team_tokens(org: str, team: str) -> Response:
    caller = await _admin(org)
    rows = await services().teams.list_tokens(caller, org, team)
    listed = [
        {k: v for k, v in token_info(row).items() if k not in ("login", "role")} for row in rows
    ]
    return json_response({"tokens": listed})


async def create_team_token(org: str, team: str) -> Response:
    caller = await _admin(org)
    body = await _body()
    name = text_field(body, "name", required=True)
    expires = field(body, "expires", int, required=False) or 0  # Unix seconds; 0: never
    if not 0 <= expires <= MAX_SECONDS:
        raise BadRequest("field 'expires' must be Unix seconds, or 0 for no expiry")
    issued = await services().auth.create_team_token(
        org,
        check_team_name(team),
        name,
        expires_in=None if expires == 0 else expires - time.time(),
        description=text_field(body, "description"),
        actor=caller,
    )
    answer = {
        "id": issued.id,
        "tokenValue": issued.token,
        "name": name,
        "team": team,
        "expires": 0 if issued.expires_at is None else issued.expires_at // 1000,
    }
    return json_response(answer, status=201)


async def revoke_team_token(org: str, team: str, token_id: str) -> Response:
    caller = await _admin(org)
    await services().teams.revoke_token(caller, org, team, token_id)
    return no_content()


# Shapes ------------------------------------------------------------------------------


def team_json(view: TeamView) -> dict[str, Any]:
    """Pulumi's ``Team`` (kind, name, displayName, description, members, stacks), and the
    project grants Procella adds (``projects``)."""
    team = view.team
    return {
        "kind": "pulumi",
        "name": team.name,
        "displayName": team.name,
        "description": team.description,
        "members": [
            {"name": login, "githubLogin": login, "avatarUrl": "", "role": "member"}
            for login in view.members
        ],
        "stacks": [
            {"projectName": g.project, "stackName": g.stack, "permission": _code(g.role)}
            for g in view.grants
            if g.stack is not None
        ],
        "projects": [
            {"projectName": g.project, "permission": _code(g.role)}
            for g in view.grants
            if g.stack is None
        ],
    }


def parse_permission(value: Any) -> Role:
    """A permission as Pulumi's number (101-103) or its name (read, write, admin)."""
    if isinstance(value, int) and not isinstance(value, bool) and value in PERMISSION_CODES:
        return PERMISSION_CODES[value]
    if isinstance(value, str) and value in PERMISSIONS:
        return PERMISSIONS[value]
    raise BadRequest("field 'permission' must be 101 (read), 102 (write) or 103 (admin)")


def _target(value: dict[str, Any], *, stack: bool) -> Target:
    project = field(value, "projectName", str)
    return Target(project, field(value, "stackName", str) if stack else None)


def _code(role: str) -> int:
    return ROLE_CODES[Role.parse(role)]
