"""Who is calling, and what they may do: pure rules, no I/O."""

from __future__ import annotations

import enum
import hashlib
import secrets
from dataclasses import dataclass, field

from procella.errors import Forbidden, NotFound


class Role(enum.IntEnum):
    """Per-organization roles; each includes the ones below it."""

    VIEWER = 1  # read stacks, state (still encrypted), history and events
    MEMBER = 2  # also create stacks, run updates, import, tag, rename, cancel, encrypt/decrypt
    ADMIN = 3  # also delete stacks

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.upper()]
        except KeyError:
            raise ValueError(f"unknown role {text!r}: use viewer, member or admin") from None


# What a team may do, as Pulumi names it, and the role each one stands for.
PERMISSIONS: dict[str, Role] = {"read": Role.VIEWER, "write": Role.MEMBER, "admin": Role.ADMIN}


def permission_name(role: Role) -> str:
    return next(name for name, held in PERMISSIONS.items() if held is role)


@dataclass(frozen=True)
class Grant:
    """A team's role on one stack, or (``stack`` None) on every stack of a project,
    including stacks created after the grant."""

    org: str
    project: str
    stack: str | None
    role: Role
    team: str

    def covers(self, org: str, project: str, stack: str | None) -> bool:
        """Whether the grant applies to the stack (or, ``stack`` None, to the whole
        project: only project grants do)."""
        if self.org != org or self.project != project:
            return False
        return self.stack is None or self.stack == stack


@dataclass(frozen=True)
class TeamRef:
    """The team a team token acts as."""

    id: str
    org: str
    name: str


@dataclass(frozen=True)
class Principal:
    """The caller behind an API token.

    A person's token carries their role in each org they belong to and the grants of
    their teams; a team token (``team`` set) carries no role, only its team's grants.
    """

    user_id: str
    login: str
    token_name: str
    site_admin: bool = False
    roles: dict[str, Role] = field(default_factory=dict)  # org name -> role
    token_id: str = ""
    grants: tuple[Grant, ...] = ()
    team: TeamRef | None = None

    @property
    def orgs(self) -> list[str]:
        if self.team is not None:
            return [self.team.org]
        return list(self.roles)

    def role_in(self, org: str) -> Role | None:
        """The org-wide role: what the caller may do to every stack of ``org``."""
        if self.site_admin:
            return Role.ADMIN
        return self.roles.get(org)

    def in_org(self, org: str) -> bool:
        """Whether the caller belongs to ``org`` at all (a role there, or a team of it)."""
        if self.role_in(org) is not None:
            return True
        return (self.team is not None and self.team.org == org) or any(
            g.org == org for g in self.grants
        )

    def role_on_project(self, org: str, project: str) -> Role | None:
        """The role on every stack of the project: org role or project grants."""
        return _highest(self.role_in(org), self.grants, org, project, None)

    def role_on_stack(self, org: str, project: str, stack: str) -> Role | None:
        """The effective role on a stack: the highest of the org role and the roles of the
        grants (of the project, or of the stack itself) that cover it."""
        return _highest(self.role_in(org), self.grants, org, project, stack)

    def sees_project(self, org: str, project: str) -> bool:
        """Whether the caller may read at least one stack of the project."""
        return self.role_on_project(org, project) is not None or any(
            g.org == org and g.project == project for g in self.grants
        )

    def require(self, org: str, needed: Role) -> None:
        """Raise unless the caller holds ``needed`` in ``org`` itself (team grants do not
        count: they are about stacks, not about the org).

        Outsiders get NotFound, not Forbidden, so an org's stacks cannot be probed.
        """
        self.require_member(org)
        _check(self.role_in(org), needed, f"in '{org}'")

    def require_project(self, org: str, project: str, needed: Role) -> None:
        """Raise unless the caller holds ``needed`` on every stack of the project (to
        create stacks in it: a write grant on the project suffices)."""
        self.require_member(org)
        _check(self.role_on_project(org, project), needed, f"on project '{org}/{project}'")

    def require_stack(self, org: str, project: str, stack: str, needed: Role) -> None:
        """Raise unless the caller's effective role on the stack is at least ``needed``.

        A stack the caller may not even read is NotFound, as for an outsider.
        """
        self.require_member(org)
        role = self.role_on_stack(org, project, stack)
        if role is None:
            raise NotFound(f"Stack '{org}/{project}/{stack}' not found")
        _check(role, needed, f"on stack '{org}/{project}/{stack}'")

    def require_member(self, org: str) -> None:
        """Raise NotFound unless the caller belongs to ``org``."""
        if not self.in_org(org):
            raise NotFound(f"organization '{org}' not found")


def _highest(
    role: Role | None, grants: tuple[Grant, ...], org: str, project: str, stack: str | None
) -> Role | None:
    for grant in grants:
        if grant.covers(org, project, stack) and (role is None or grant.role > role):
            role = grant.role
    return role


def _check(held: Role | None, needed: Role, where: str) -> None:
    if held is not None and held >= needed:
        return
    has = "no role" if held is None else f"{held.name.lower()} ({permission_name(held)})"
    raise Forbidden(
        f"this needs the {needed.name.lower()} role ({permission_name(needed)}) {where}; "
        f"your token has {has}"
    )


TOKEN_PREFIX = "pul-"


def new_api_token() -> str:
    """A fresh API token in the shape of Pulumi's (``pul-`` and 40 hex digits)."""
    return TOKEN_PREFIX + secrets.token_hex(20)


def new_lease_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What is stored instead of a token. Tokens are random, so a plain SHA-256 suffices."""
    return hashlib.sha256(token.encode()).hexdigest()
