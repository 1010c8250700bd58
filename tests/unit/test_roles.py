"""procella.auth.models: roles, the permission check, tokens."""

from __future__ import annotations

import hashlib

import pytest

from procella.auth.models import (
    TOKEN_PREFIX,
    Principal,
    Role,
    new_api_token,
    new_lease_token,
    token_hash,
)
from procella.errors import Forbidden, NotFound


def test_role_order() -> None:
    assert Role.VIEWER < Role.MEMBER < Role.ADMIN
    assert sorted([Role.ADMIN, Role.VIEWER, Role.MEMBER]) == [Role.VIEWER, Role.MEMBER, Role.ADMIN]


@pytest.mark.parametrize(
    ("text", "role"),
    [("viewer", Role.VIEWER), ("MEMBER", Role.MEMBER), ("Admin", Role.ADMIN)],
)
def test_role_parse(text: str, role: Role) -> None:
    assert Role.parse(text) is role


@pytest.mark.parametrize("text", ["", "owner", "admins", "1"])
def test_role_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        Role.parse(text)


def principal(**roles: Role) -> Principal:
    return Principal("u1", "alice", "t", roles=dict(roles))


@pytest.mark.parametrize(
    ("held", "needed", "allowed"),
    [
        (Role.VIEWER, Role.VIEWER, True),
        (Role.VIEWER, Role.MEMBER, False),
        (Role.VIEWER, Role.ADMIN, False),
        (Role.MEMBER, Role.VIEWER, True),
        (Role.MEMBER, Role.MEMBER, True),
        (Role.MEMBER, Role.ADMIN, False),
        (Role.ADMIN, Role.ADMIN, True),
        (Role.ADMIN, Role.VIEWER, True),
    ],
)
def test_require(held: Role, needed: Role, allowed: bool) -> None:
    p = principal(acme=held)
    if allowed:
        p.require("acme", needed)
    else:
        with pytest.raises(Forbidden):
            p.require("acme", needed)


def test_outsiders_get_not_found() -> None:
    p = principal(acme=Role.ADMIN)
    for needed in Role:
        with pytest.raises(NotFound):
            p.require("other", needed)
    assert p.role_in("other") is None


def test_site_admin_is_admin_everywhere() -> None:
    admin = Principal("u0", "admin", "bootstrap", site_admin=True)
    assert admin.role_in("anything") is Role.ADMIN
    admin.require("anything", Role.ADMIN)


def test_orgs_in_membership_order() -> None:
    p = principal(zeta=Role.VIEWER, alpha=Role.ADMIN)
    assert p.orgs == ["zeta", "alpha"]


def test_tokens() -> None:
    token = new_api_token()
    assert token.startswith(TOKEN_PREFIX) and len(token) == len(TOKEN_PREFIX) + 40
    int(token[len(TOKEN_PREFIX) :], 16)
    assert new_api_token() != token
    lease = new_lease_token()
    assert len(lease) >= 32 and new_lease_token() != lease
    assert token_hash("abc") == hashlib.sha256(b"abc").hexdigest()
    assert token_hash(token) != token
