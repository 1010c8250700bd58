"""Teams: org admins group members and grant them roles on stacks and projects; a member's
role on a stack is the highest of their org role and their teams' grants; team tokens act
as their team, with nothing else."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from procella.auth.models import Role
from procella.errors import AlreadyExists, BadRequest, NotFound
from tests.helpers import Api, assert_error, assert_ok, body_json, services_of, untyped

ORG = "acme"
TEAMS = f"/api/orgs/{ORG}/teams"
DEV, PROD = f"{ORG}/web/dev", f"{ORG}/web/prod"


@pytest.fixture
async def stacks(api: Api) -> tuple[str, str]:
    """Two sibling stacks in acme/web, each with one update."""
    for stack in (DEV, PROD):
        await api.new_stack(stack)
        await api.run_update(stack, untyped(1))
    return DEV, PROD


async def create_team(api: Api, name: str = "deployers", **body: Any) -> dict[str, Any]:
    response = await api.call("POST", TEAMS, {"name": name, **body})
    created: dict[str, Any] = json_of(await assert_ok(response, 201))
    return created


def json_of(raw: bytes) -> Any:
    return json.loads(raw)


async def change(api: Api, team: str, body: dict[str, Any], status: int = 200) -> Any:
    response = await api.call("PATCH", f"{TEAMS}/{team}", body)
    if status != 200:
        return await assert_error(response, status)
    return json_of(await assert_ok(response, 200))


def grant_stack(stack: str, permission: int | str) -> dict[str, Any]:
    _, project, name = stack.split("/")
    return {
        "addStackPermission": {"projectName": project, "stackName": name, "permission": permission}
    }


def remove_stack(stack: str) -> dict[str, Any]:
    _, project, name = stack.split("/")
    return {"removeStack": {"projectName": project, "stackName": name}}


def add_member(login: str) -> dict[str, Any]:
    return {"memberAction": "add", "member": login}


async def team_token(api: Api, team: str, name: str = "ci", **body: Any) -> dict[str, Any]:
    response = await api.call("POST", f"{TEAMS}/{team}/tokens", {"name": name, **body})
    created: dict[str, Any] = json_of(await assert_ok(response, 201))
    return created


async def can_update(caller: Api, stack: str) -> int:
    """The status of creating an update of ``stack`` (200: allowed)."""
    response = await caller.create_update(stack)
    return int(response.status_code)


async def audit_events(api: Api) -> list[tuple[str, str]]:
    log = await body_json(await api.call("GET", f"/api/orgs/{ORG}/auditlogs/v2"))
    return [(e["event"], e["description"]) for e in log["auditLogEvents"]]


# Managing teams ------------------------------------------------------------------------


async def test_an_admin_creates_changes_and_deletes_a_team(
    api: Api, stacks: tuple[str, str], as_role: Callable[..., Any]
) -> None:
    await as_role(ORG, Role.VIEWER, "vera")
    created = await create_team(api, description="ships web")
    assert created == {
        "kind": "pulumi",
        "name": "deployers",
        "displayName": "deployers",
        "description": "ships web",
        "members": [],
        "stacks": [],
        "projects": [],
    }
    await change(api, "deployers", add_member("vera"))
    await change(api, "deployers", grant_stack(DEV, 102))
    await change(
        api, "deployers", {"addProjectPermission": {"projectName": "api", "permission": "read"}}
    )
    team = await change(api, "deployers", {"newDescription": "ships web and reads api"})
    assert team["description"] == "ships web and reads api"
    assert [m["githubLogin"] for m in team["members"]] == ["vera"]
    assert team["stacks"] == [{"projectName": "web", "stackName": "dev", "permission": 102}]
    assert team["projects"] == [{"projectName": "api", "permission": 101}]
    fetched = await body_json(await api.call("GET", f"{TEAMS}/deployers"))
    assert fetched == team
    listed = await body_json(await api.call("GET", TEAMS))
    assert listed == {"teams": [team]}

    # A grant follows its stack through a rename.
    await assert_ok(await api.call("POST", f"/api/stacks/{DEV}/rename", {"newName": "dev2"}), 204)
    team = await body_json(await api.call("GET", f"{TEAMS}/deployers"))
    assert team["stacks"] == [{"projectName": "web", "stackName": "dev2", "permission": 102}]

    await assert_ok(await api.call("DELETE", f"{TEAMS}/deployers"), 204)
    await assert_error(await api.call("GET", f"{TEAMS}/deployers"), 404)
    assert await body_json(await api.call("GET", TEAMS)) == {"teams": []}
    # Pulumi's path for creating one works too, and the name is free again.
    response = await api.call(
        "POST", f"{TEAMS}/pulumi", {"name": "deployers", "teamType": "pulumi"}
    )
    await assert_ok(response, 201)
    # That path is only for creating: a team called "pulumi" is reached as any other.
    await assert_error(await api.call("GET", f"{TEAMS}/pulumi"), 404)
    await create_team(api, "pulumi")
    await change(api, "pulumi", {"newDescription": "named like the path"})


async def test_team_changes_are_in_the_audit_log(
    api: Api, stacks: tuple[str, str], as_role: Callable[..., Any]
) -> None:
    await as_role(ORG, Role.VIEWER, "vera")
    await create_team(api)
    await change(api, "deployers", add_member("vera"))
    await change(api, "deployers", grant_stack(DEV, "write"))
    await change(api, "deployers", remove_stack(DEV))
    await change(api, "deployers", {"memberAction": "remove", "member": "vera"})
    token = await team_token(api, "deployers")
    await assert_ok(await api.call("DELETE", f"{TEAMS}/deployers/tokens/{token['id']}"), 204)
    await assert_ok(await api.call("DELETE", f"{TEAMS}/deployers"), 204)
    events = (await audit_events(api))[:8]
    assert events == [
        ("team.delete", "deleted team deployers with its grants and tokens"),
        ("token.revoke", "revoked token 'ci' of team deployers"),
        ("token.create", "created token 'ci' for team deployers"),
        ("team.member.remove", "team deployers: removed vera"),
        ("team.permission.remove", "team deployers: revoked its grant on stack web/dev"),
        ("team.permission.add", "team deployers: granted write on stack web/dev"),
        ("team.member.add", "team deployers: added vera"),
        ("team.create", "created team deployers"),
    ]


async def test_only_org_admins_manage_teams(
    api: Api, stacks: tuple[str, str], as_role: Callable[..., Any]
) -> None:
    await create_team(api)
    member = await as_role(ORG, Role.MEMBER, "mia")
    outsider = await as_role("elsewhere", Role.ADMIN, "olga")
    calls: list[tuple[str, str, Any]] = [
        ("GET", TEAMS, None),
        ("POST", TEAMS, {"name": "mine"}),
        ("GET", f"{TEAMS}/deployers", None),
        ("PATCH", f"{TEAMS}/deployers", add_member("mia")),
        ("DELETE", f"{TEAMS}/deployers", None),
        ("GET", f"{TEAMS}/deployers/tokens", None),
        ("POST", f"{TEAMS}/deployers/tokens", {"name": "x"}),
    ]
    for method, path, body in calls:
        kwargs = {} if body is None else {"body": body}
        await assert_error(await member.call(method, path, **kwargs), 403)
        await assert_error(await outsider.call(method, path, **kwargs), 404)  # not even a hint
    team = await body_json(await api.call("GET", f"{TEAMS}/deployers"))
    assert team["members"] == [] and [
        t["name"] for t in (await body_json(await api.call("GET", TEAMS)))["teams"]
    ] == ["deployers"]


async def test_bad_requests_change_nothing(
    api: Api, stacks: tuple[str, str], as_role: Callable[..., Any]
) -> None:
    await as_role(ORG, Role.VIEWER, "vera")
    await as_role("elsewhere", Role.VIEWER, "otto")
    before = await create_team(api, description="d")
    body: dict[str, Any]
    for body in (
        {},
        {"name": ""},
        {"name": "has space"},
        {"name": "x" * 101},
        {"name": 7},
        {"name": "ok", "teamType": "github"},
        {"name": "ok", "description": "\x00"},
    ):
        await assert_error(await api.call("POST", TEAMS, body), 400)
    await assert_error(await api.call("POST", TEAMS, {"name": "deployers"}), 409)
    for body in (
        {},
        {"newDisplayName": "x"},
        {"memberAction": "invite", "member": "vera"},
        {"memberAction": "add"},
        add_member("otto"),  # not a member of the org
        add_member("nobody"),
        {**add_member("vera"), **grant_stack(DEV, 102)},  # two changes at once
        grant_stack(DEV, 104),
        grant_stack(DEV, 0),
        grant_stack(DEV, "owner"),
        grant_stack(DEV, True),
        {"addStackPermission": {"projectName": "web", "permission": 101}},
        {"addStackPermission": "web/dev"},
        {"addProjectPermission": {"projectName": "no spaces", "permission": 101}},
        {"addProjectPermission": {"projectName": "web"}},
        {"removeProject": {}},
    ):
        await assert_error(await api.call("PATCH", f"{TEAMS}/deployers", body), 400)
    await change(api, "deployers", grant_stack(f"{ORG}/web/missing", 101), status=404)
    await change(api, "deployers", remove_stack(DEV), status=404)
    await change(api, "deployers", {"memberAction": "remove", "member": "vera"}, status=404)
    await assert_error(await api.call("PATCH", f"{TEAMS}/nope", add_member("vera")), 404)
    await assert_error(await api.call("POST", f"{TEAMS}/deployers/tokens", {}), 400)
    await assert_error(
        await api.call("POST", f"{TEAMS}/deployers/tokens", {"name": "x", "expires": 5}), 400
    )
    assert await body_json(await api.call("GET", f"{TEAMS}/deployers")) == before
    assert await body_json(await api.call("GET", f"{TEAMS}/deployers/tokens")) == {"tokens": []}
    assert [t["name"] for t in (await body_json(await api.call("GET", TEAMS)))["teams"]] == [
        "deployers"
    ]


# What grants allow ---------------------------------------------------------------------


async def test_a_viewer_with_write_on_one_stack_updates_it_but_not_its_sibling(
    api: Api, stacks: tuple[str, str], as_role: Callable[..., Any]
) -> None:
    vera = await as_role(ORG, Role.VIEWER, "vera")
    assert await can_update(vera, DEV) == 403
    await create_team(api)
    await change(api, "deployers", add_member("vera"))
    await change(api, "deployers", grant_stack(DEV, 102))
    update = await vera.run_update(DEV, untyped(2))
    assert update.version == 2
    assert (await vera.encrypt_one(DEV, b"s")) != ""
    await assert_ok(await vera.call("PATCH", f"/api/stacks/{DEV}/tags", {"k": "v"}), 204)
    assert await can_update(vera, PROD) == 403
    await assert_error(await vera.call("PATCH", f"/api/stacks/{PROD}/tags", {"k": "v"}), 403)
    # Write is not admin: the stack cannot be deleted, and no stack can be created.
    await assert_error(
        await vera.call("DELETE", f"/api/stacks/{DEV}", query={"force": "true"}), 403
    )
    await assert_error(await vera.create_stack(f"{ORG}/web/new"), 403)
    # Both stacks are still listed (a viewer reads every stack of the org).
    names = [s["stackName"] for s in (await vera.list_stacks(organization=ORG))["stacks"]]
    assert names == ["dev", "prod"]
    assert len(await api.history(PROD)) == 1


async def test_a_project_grant_covers_stacks_created_later(
    api: Api, stacks: tuple[str, str], as_role: Callable[..., Any]
) -> None:
    vera = await as_role(ORG, Role.VIEWER, "vera")
    await create_team(api)
    await change(api, "deployers", add_member("vera"))
    await change(
        api, "deployers", {"addProjectPermission": {"projectName": "web", "permission": 102}}
    )
    await vera.new_stack(f"{ORG}/web/later")  # write on the project creates stacks in it
    await vera.run_update(f"{ORG}/web/later", untyped(1))
    await api.new_stack(f"{ORG}/web/by-admin")
    assert await can_update(vera, f"{ORG}/web/by-admin") == 200
    assert await can_update(vera, PROD) == 200
    await api.new_stack(f"{ORG}/api/dev")
    assert await can_update(vera, f"{ORG}/api/dev") == 403
    await assert_error(await vera.create_stack(f"{ORG}/api/other"), 403)
    # Moving a stack out of the project would need write on the destination too.
    response = await vera.call(
        "POST", f"/api/stacks/{ORG}/web/later/rename", {"newName": "x", "newProject": "api"}
    )
    await assert_error(response, 403)


async def test_removing_a_member_or_a_grant_takes_effect(
    api: Api, stacks: tuple[str, str], as_role: Callable[..., Any]
) -> None:
    vera = await as_role(ORG, Role.VIEWER, "vera")
    await create_team(api)
    await change(api, "deployers", add_member("vera"))
    await change(api, "deployers", grant_stack(DEV, "admin"))
    assert await can_update(vera, DEV) == 200
    await change(api, "deployers", grant_stack(DEV, "read"))  # replaces the admin grant
    assert await can_update(vera, DEV) == 403
    await change(api, "deployers", grant_stack(DEV, "write"))
    assert await can_update(vera, DEV) == 200
    await change(api, "deployers", {"memberAction": "remove", "member": "vera"})
    assert await can_update(vera, DEV) == 403  # at once on this replica
    await change(api, "deployers", add_member("vera"))
    assert await can_update(vera, DEV) == 200
    await change(api, "deployers", remove_stack(DEV))
    assert await can_update(vera, DEV) == 403
    await change(api, "deployers", grant_stack(DEV, "write"))
    await assert_ok(await api.call("DELETE", f"{TEAMS}/deployers"), 204)
    assert await can_update(vera, DEV) == 403


async def test_a_deleted_stack_takes_its_grants_with_it(
    api: Api, stacks: tuple[str, str], as_role: Callable[..., Any]
) -> None:
    vera = await as_role(ORG, Role.VIEWER, "vera")
    await create_team(api)
    await change(api, "deployers", add_member("vera"))
    await change(api, "deployers", grant_stack(DEV, "write"))
    await assert_ok(await api.call("DELETE", f"/api/stacks/{DEV}", query={"force": "true"}), 204)
    await api.new_stack(DEV)  # same name, another stack
    assert await can_update(vera, DEV) == 403
    assert (await body_json(await api.call("GET", f"{TEAMS}/deployers")))["stacks"] == []


async def test_outsiders_still_get_404(
    api: Api, stacks: tuple[str, str], as_role: Callable[..., Any]
) -> None:
    await create_team(api)
    await change(api, "deployers", grant_stack(DEV, "admin"))
    outsider = await as_role("elsewhere", Role.ADMIN, "olga")
    await assert_error(await outsider.get_stack(DEV), 404)
    await assert_error(await outsider.create_update(DEV), 404)
    await assert_error(await outsider.create_stack(f"{ORG}/web/x"), 404)
    assert (await outsider.list_stacks(organization=ORG))["stacks"] == []


# Team tokens ---------------------------------------------------------------------------


async def test_a_team_token_acts_as_the_team(
    api: Api, stacks: tuple[str, str], as_role: Callable[..., Any]
) -> None:
    await as_role(ORG, Role.ADMIN, "ada")  # the org has people too; the token is none of them
    await create_team(api)
    await change(api, "deployers", grant_stack(DEV, "write"))
    await change(api, "deployers", grant_stack(PROD, "read"))
    created = await team_token(api, "deployers", description="CI of web")
    assert created["tokenValue"].startswith("pul-") and created["expires"] == 0
    bot = api.as_token(created["tokenValue"])

    user = await body_json(await bot.call("GET", "/api/user"))
    assert user["githubLogin"] == ORG  # as Pulumi Cloud names team tokens
    assert [o["githubLogin"] for o in user["organizations"]] == [ORG]
    assert user["tokenInfo"] == {"name": "ci", "organization": ORG, "team": "deployers"}
    default = await body_json(await bot.call("GET", "/api/user/organizations/default"))
    assert default["GitHubLogin"] == ORG

    update = await bot.run_update(DEV, untyped(3))
    assert update.version == 2
    log = await body_json(await api.call("GET", f"/api/orgs/{ORG}/auditlogs/v2"))
    started = next(e for e in log["auditLogEvents"] if e["event"] == "update.start")
    assert started["user"]["githubLogin"] == "team:acme/deployers"  # who did it, recorded
    assert started["tokenName"] == "ci"
    await assert_ok(await bot.export(PROD), 200)
    assert await can_update(bot, PROD) == 403
    await api.new_stack(f"{ORG}/api/dev")
    await assert_error(await bot.get_stack(f"{ORG}/api/dev"), 404)  # not even readable
    await assert_error(await bot.create_stack(f"{ORG}/web/new"), 403)
    listed = [(s["projectName"], s["stackName"]) for s in await bot.list_all_stacks()]
    assert listed == [("web", "dev"), ("web", "prod")]
    # No org role: nothing org-level, e.g. the org's tokens or teams.
    await assert_error(await bot.call("GET", f"/api/orgs/{ORG}/tokens"), 403)
    await assert_error(await bot.call("GET", TEAMS), 403)

    tokens = await body_json(await api.call("GET", f"{TEAMS}/deployers/tokens"))
    [info] = tokens["tokens"]
    assert info["id"] == created["id"] and info["description"] == "CI of web"
    assert info["lastUsed"] > 0 and info["revoked"] == 0
    assert created["tokenValue"] not in str(tokens)
    await assert_ok(await api.call("DELETE", f"{TEAMS}/deployers/tokens/{created['id']}"), 204)
    await assert_error(await bot.call("GET", "/api/user"), 401)
    await assert_error(await api.call("DELETE", f"{TEAMS}/deployers/tokens/{created['id']}"), 404)


async def test_a_team_token_follows_the_teams_grants_and_dies_with_it(
    api: Api, stacks: tuple[str, str]
) -> None:
    await create_team(api)
    bot = api.as_token((await team_token(api, "deployers"))["tokenValue"])
    assert (await bot.list_stacks())["stacks"] == []
    await assert_error(await bot.get_stack(DEV), 404)
    await change(
        api, "deployers", {"addProjectPermission": {"projectName": "web", "permission": 102}}
    )
    await bot.new_stack(f"{ORG}/web/from-ci")
    assert await can_update(bot, PROD) == 200
    await assert_error(
        await bot.call("DELETE", f"/api/stacks/{PROD}", query={"force": "true"}), 403
    )
    await assert_ok(await api.call("DELETE", f"{TEAMS}/deployers"), 204)
    await assert_error(await bot.call("GET", "/api/user"), 401)


async def test_a_team_token_of_another_org_sees_nothing_here(
    api: Api, stacks: tuple[str, str], as_role: Callable[..., Any]
) -> None:
    await as_role("elsewhere", Role.ADMIN, "olga")
    response = await api.call("POST", "/api/orgs/elsewhere/teams", {"name": "deployers"})
    await assert_ok(response, 201)
    response = await api.call(
        "PATCH",
        "/api/orgs/elsewhere/teams/deployers",
        {"addProjectPermission": {"projectName": "web", "permission": "admin"}},
    )
    await assert_ok(response, 200)
    response = await api.call("POST", "/api/orgs/elsewhere/teams/deployers/tokens", {"name": "ci"})
    bot = api.as_token(json_of(await assert_ok(response, 201))["tokenValue"])
    await assert_error(await bot.get_stack(DEV), 404)
    await assert_error(await bot.create_update(DEV), 404)
    assert (await bot.list_stacks(organization=ORG))["stacks"] == []


async def test_the_service_mints_team_tokens_with_an_expiry(
    app: Any, api: Api, stacks: tuple[str, str]
) -> None:
    """``AuthService.create_team_token``, as a token exchange calls it (no HTTP caller)."""
    await create_team(api)
    await change(api, "deployers", grant_stack(DEV, "write"))
    auth = services_of(app).auth
    issued = await auth.create_team_token(ORG, "deployers", "exchanged", expires_in=3600)
    assert issued.expires_at is not None
    assert abs(issued.expires_at / 1000 - (time.time() + 3600)) < 60
    bot = api.as_token(issued.token)
    assert await can_update(bot, DEV) == 200
    [info] = (await body_json(await api.call("GET", f"{TEAMS}/deployers/tokens")))["tokens"]
    assert (info["id"], info["name"], info["expires"]) == (
        issued.id,
        "exchanged",
        issued.expires_at // 1000,
    )
    log = await body_json(await api.call("GET", f"/api/orgs/{ORG}/auditlogs/v2"))
    newest = log["auditLogEvents"][0]
    assert (newest["event"], newest["user"]["githubLogin"]) == ("token.create", "procella")
    with pytest.raises(AlreadyExists):
        await auth.create_team_token(ORG, "deployers", "exchanged")
    with pytest.raises(NotFound):
        await auth.create_team_token(ORG, "nope", "x")
    with pytest.raises(BadRequest):
        await auth.create_team_token(ORG, "deployers", "y", expires_in=0)
