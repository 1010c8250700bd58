"""procella.auth.models: the effective role on a stack, from the org role and team grants."""

from __future__ import annotations

import pytest

from procella.auth.models import Grant, Principal, Role, TeamRef
from procella.errors import Forbidden, NotFound

READ, WRITE, ADMIN = Role.VIEWER, Role.MEMBER, Role.ADMIN


def person(roles: dict[str, Role], *grants: Grant) -> Principal:
    return Principal("u1", "alice", "t", roles=roles, grants=grants)


def team_token(*grants: Grant) -> Principal:
    return Principal("u2", "team:acme/ci", "t", grants=grants, team=TeamRef("t1", "acme", "ci"))


def on_stack(project: str, stack: str, role: Role) -> Grant:
    return Grant("acme", project, stack, role, "ci")


def on_project(project: str, role: Role) -> Grant:
    return Grant("acme", project, None, role, "ci")


@pytest.mark.parametrize(
    ("org_role", "grants", "expected"),
    [
        (READ, [], READ),
        (READ, [on_stack("web", "dev", WRITE)], WRITE),
        (READ, [on_stack("web", "prod", ADMIN)], READ),  # a sibling's grant
        (READ, [on_stack("api", "dev", ADMIN)], READ),  # same stack name, other project
        (READ, [on_project("web", WRITE)], WRITE),
        (READ, [on_project("web", WRITE), on_stack("web", "dev", ADMIN)], ADMIN),
        (WRITE, [on_stack("web", "dev", READ)], WRITE),  # a grant never lowers the org role
        (ADMIN, [on_project("web", READ)], ADMIN),
        (None, [on_stack("web", "dev", READ)], READ),
        (None, [on_project("web", WRITE), on_project("web", READ)], WRITE),  # two teams
        (None, [], None),
    ],
)
def test_effective_role_is_the_highest(
    org_role: Role | None, grants: list[Grant], expected: Role | None
) -> None:
    roles = {} if org_role is None else {"acme": org_role}
    assert person(roles, *grants).role_on_stack("acme", "web", "dev") is expected


def test_grants_of_another_org_do_not_count() -> None:
    elsewhere = Grant("other", "web", "dev", ADMIN, "ci")
    p = person({"acme": READ}, elsewhere)
    assert p.role_on_stack("acme", "web", "dev") is READ
    assert p.role_on_stack("other", "web", "dev") is ADMIN


def test_project_role_counts_project_grants_only() -> None:
    p = person({"acme": READ}, on_stack("web", "dev", ADMIN), on_project("api", WRITE))
    assert p.role_on_project("acme", "web") is READ  # a stack grant creates nothing
    assert p.role_on_project("acme", "api") is WRITE
    p.require_project("acme", "api", WRITE)
    with pytest.raises(Forbidden):
        p.require_project("acme", "web", WRITE)


def test_require_stack() -> None:
    p = person({"acme": READ}, on_stack("web", "dev", WRITE))
    p.require_stack("acme", "web", "dev", WRITE)
    with pytest.raises(Forbidden) as refused:
        p.require_stack("acme", "web", "prod", WRITE)
    assert "member role (write) on stack 'acme/web/prod'" in refused.value.message
    assert "viewer (read)" in refused.value.message
    with pytest.raises(Forbidden):
        p.require_stack("acme", "web", "dev", ADMIN)


def test_outsiders_and_unreadable_stacks_are_not_found() -> None:
    p = person({"acme": READ}, on_stack("web", "dev", WRITE))
    with pytest.raises(NotFound, match="organization"):
        p.require_stack("other", "web", "dev", READ)
    token = team_token(on_stack("web", "dev", WRITE))
    with pytest.raises(NotFound, match="Stack 'acme/web/prod' not found"):
        token.require_stack("acme", "web", "prod", READ)
    with pytest.raises(NotFound, match="organization"):
        token.require_stack("other", "web", "dev", READ)


def test_a_team_token_has_exactly_its_teams_grants() -> None:
    token = team_token(on_project("web", WRITE), on_stack("api", "prod", READ))
    assert token.role_in("acme") is None
    assert token.in_org("acme") and not token.in_org("other")
    assert token.orgs == ["acme"]
    assert token.role_on_stack("acme", "web", "anything-new") is WRITE
    assert token.role_on_stack("acme", "api", "prod") is READ
    assert token.role_on_stack("acme", "api", "dev") is None
    assert token.sees_project("acme", "api") and not token.sees_project("acme", "db")
    with pytest.raises(Forbidden):
        token.require("acme", READ)  # org-level: no role at all


def test_a_team_token_with_no_grants_still_belongs_to_its_org() -> None:
    token = team_token()
    assert token.in_org("acme")
    with pytest.raises(Forbidden):
        token.require_project("acme", "web", WRITE)


def test_site_admin_is_admin_on_every_stack() -> None:
    admin = Principal("u0", "admin", "bootstrap", site_admin=True)
    assert admin.role_on_stack("any", "p", "s") is ADMIN
    admin.require_project("any", "p", ADMIN)


@pytest.mark.parametrize(
    ("grant", "stack", "covers"),
    [
        (on_project("web", READ), "dev", True),
        (on_project("web", READ), None, True),
        (on_stack("web", "dev", READ), "dev", True),
        (on_stack("web", "dev", READ), "prod", False),
        (on_stack("web", "dev", READ), None, False),  # a stack grant is not the project's
    ],
)
def test_covers(grant: Grant, stack: str | None, covers: bool) -> None:
    assert grant.covers("acme", "web", stack) is covers
    assert not grant.covers("acme", "other", stack)
    assert not grant.covers("other", "web", stack)
