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


@dataclass(frozen=True)
class Principal:
    """The caller behind an API token."""

    user_id: str
    login: str
    token_name: str
    site_admin: bool = False
    roles: dict[str, Role] = field(default_factory=dict)  # org name -> role
    token_id: str = ""

    @property
    def orgs(self) -> list[str]:
        return list(self.roles)

    def role_in(self, org: str) -> Role | None:
        if self.site_admin:
            return Role.ADMIN
        return self.roles.get(org)

    def require(self, org: str, needed: Role) -> None:
        """Raise unless the caller holds ``needed`` in ``org``.

        Outsiders get NotFound, not Forbidden, so an org's stacks cannot be probed.
        """
        role = self.role_in(org)
        if role is None:
            raise NotFound(f"organization '{org}' not found")
        if role < needed:
            raise Forbidden(
                f"this needs the {needed.name.lower()} role in '{org}'; "
                f"your token has {role.name.lower()}"
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
