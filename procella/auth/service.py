"""API tokens: who a token belongs to, the bootstrap administrator, minting new tokens."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from procella import audit
from procella.auth.models import Grant, Principal, Role, TeamRef, new_api_token, token_hash
from procella.errors import AlreadyExists, BadRequest, NotFound, Unauthorized
from procella.metadata.base import (
    Connection,
    MetadataStore,
    PrincipalRecord,
    TokenRow,
    UniqueViolation,
)
from procella.metadata.queries import auth as auth_q
from procella.metadata.queries import teams as team_q
from procella.stacks.models import check_org_name

log = logging.getLogger(__name__)

ADMIN_LOGIN = "admin"
ADMIN_TOKEN_NAME = "bootstrap"
# A token's last use is written at most this often (not at every request).
LAST_USED_EVERY_MS = 60_000


@dataclass(frozen=True)
class Bootstrap:
    """The outcome of ``ensure_admin``: a token to show once, if one was generated."""

    generated_token: str | None


class PrincipalCache:
    """What a replica read about a token, reused for ``ttl`` seconds: most requests then
    need no statement to authenticate. So a role change, a team change (members, grants)
    or a revocation takes effect on every replica within ``ttl``. Unknown tokens are never
    cached: a token minted a moment ago works at once."""

    def __init__(
        self, ttl: float, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self._entries: dict[str, tuple[float, Principal]] = {}

    def get(self, key: str) -> Principal | None:
        found = self._entries.get(key)
        if found is None:
            return None
        if found[0] <= self.clock():
            del self._entries[key]
            return None
        return found[1]

    def clear(self) -> None:
        self._entries.clear()

    def put(self, key: str, principal: Principal, valid_for: float | None = None) -> None:
        """Keep ``principal`` for ``ttl`` seconds, or ``valid_for`` if that is shorter (the
        token expires sooner)."""
        keep = self.ttl if valid_for is None else min(self.ttl, valid_for)
        if keep <= 0:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()  # rare (a flood of distinct tokens); refilled by use
        self._entries[key] = (self.clock() + keep, principal)


class AuthService:
    def __init__(self, meta: MetadataStore, cache_seconds: float = 0.0) -> None:
        self.meta = meta
        self.cache = PrincipalCache(cache_seconds)

    async def authenticate(self, token: str) -> Principal:
        key = token_hash(token)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        async with self.meta.read() as conn:
            record = await auth_q.principal_by_token_hash(conn, key)
            if record is None:
                raise Unauthorized("invalid access token")
            found = await _principal(conn, record)
        now_ms = time.time() * 1000
        if record.last_used_at is None or record.last_used_at < now_ms - LAST_USED_EVERY_MS:
            async with self.meta.transaction() as conn:
                await auth_q.touch_token(conn, record.token_id)
        remaining = None if record.expires_at is None else (record.expires_at - now_ms) / 1000
        self.cache.put(key, found, remaining)
        return found

    async def org_names(self, principal: Principal) -> list[str]:
        """The organizations the caller belongs to; a site admin's are all of them."""
        if not principal.site_admin:
            return principal.orgs
        async with self.meta.read() as conn:
            return await auth_q.list_org_names(conn)

    async def ensure_admin(self, default_org: str, configured_token: str) -> Bootstrap:
        """Make sure the site administrator exists and can log in.

        With a configured token, that token (and only it) is the administrator's bootstrap
        token. Without one, a token is generated the first time and returned to be shown;
        several processes starting together generate at most one.
        """
        check_org_name(default_org)
        async with self.meta.transaction() as conn:
            user_id = await auth_q.ensure_user(conn, ADMIN_LOGIN, site_admin=True)
            org_id = await auth_q.ensure_org(conn, default_org)
            await auth_q.set_membership(conn, user_id, org_id, Role.ADMIN.name.lower())
            existing = await auth_q.token_hash_named(conn, user_id, ADMIN_TOKEN_NAME)
            if configured_token:
                wanted = token_hash(configured_token)
                if existing != wanted:
                    await auth_q.replace_token(conn, user_id, ADMIN_TOKEN_NAME, wanted)
                return Bootstrap(None)
            if existing is not None:
                return Bootstrap(None)
            generated = new_api_token()
            await auth_q.insert_token(conn, user_id, ADMIN_TOKEN_NAME, token_hash(generated))
            return Bootstrap(generated)

    async def create_token(
        self,
        org: str,
        role: Role | None,
        login: str,
        name: str,
        *,
        description: str = "",
        expires_in: float | None = None,
        actor: audit.Actor = None,
        oidc_issuer_id: str | None = None,
    ) -> IssuedToken:
        """Mint a token for ``login`` with ``role`` in ``org``, for ``expires_in`` seconds
        or for good. With a role, the user is created if needed and given that role; with
        None, they must be a member already and keep their role. ``actor``: an org admin
        through the API, an OIDC subject, or None for the server's command line."""
        check_org_name(org)
        if login.startswith(team_q.TOKEN_LOGIN_PREFIX):
            raise BadRequest(f"logins starting with {team_q.TOKEN_LOGIN_PREFIX!r} name team tokens")
        expires_at = expiry(expires_in)
        token = new_api_token()
        async with self.meta.transaction() as conn:
            org_id = await auth_q.ensure_org(conn, org)
            if role is None:
                held = await auth_q.role_of(conn, login, org)
                if held is None:
                    raise NotFound(f"user '{login}' is not a member of '{org}'")
            else:
                held = role.name.lower()
            user_id = await auth_q.ensure_user(conn, login)
            await auth_q.set_membership(conn, user_id, org_id, held)
            token_id = await store_token(
                conn,
                user_id,
                name,
                token,
                f"{login} already has a token named {name!r}",
                description=description,
                expires_at=expires_at,
                oidc_issuer_id=oidc_issuer_id,
            )
            await audit.record(
                conn,
                org_id,
                actor,
                audit.TOKEN_CREATE,
                login,
                f"created token {name!r} for {login} ({held} in {org}{until(expires_at)})",
            )
        self.cache.clear()  # the user's role may have changed: here at once, elsewhere in ttl
        return IssuedToken(token_id, token, expires_at)

    async def create_team_token(
        self,
        org: str,
        team: str,
        name: str,
        *,
        expires_in: float | None = None,
        description: str = "",
        actor: audit.Actor = None,
        oidc_issuer_id: str | None = None,
    ) -> IssuedToken:
        """Mint a token that acts as ``team`` of ``org`` (exactly the team's grants, no
        personal role), for ``expires_in`` seconds or for good. ``actor``: who asked, for
        the audit log (an org admin's principal through the API, a token exchange's
        subject), or None for the server itself (its command line). The secret is in the
        answer only. Token names are unique per team: a taken one is AlreadyExists."""
        check_org_name(org)
        expires_at = expiry(expires_in)
        token = new_api_token()
        async with self.meta.transaction() as conn:
            found = await team_q.get(conn, org, team)
            if found is None:
                raise NotFound(f"team '{team}' not found in '{org}'")
            user_id = await auth_q.ensure_user(conn, team_q.token_login(org, team))
            token_id = await store_token(
                conn,
                user_id,
                name,
                token,
                f"team {team} already has a token named {name!r}",
                description=description,
                expires_at=expires_at,
                team_id=found.id,
                oidc_issuer_id=oidc_issuer_id,
            )
            await audit.record(
                conn,
                found.org_id,
                actor,
                audit.TOKEN_CREATE,
                f"team:{team}",
                f"created token {name!r} for team {team}{until(expires_at)}",
            )
        return IssuedToken(token_id, token, expires_at)

    async def list_tokens(
        self, principal: Principal | None, org: str | None = None, login: str | None = None
    ) -> list[TokenRow]:
        """The tokens of ``org``'s members (for its admins), or, for the server's command
        line (``principal`` None), of any user."""
        if principal is not None:
            assert org is not None
            principal.require(org, Role.ADMIN)
        async with self.meta.read() as conn:
            return await auth_q.list_tokens(conn, org, login)

    async def revoke_token(
        self, principal: Principal | None, org: str | None, token_id: str
    ) -> None:
        """Revoke a token: refused at once by this replica, by the others within
        ``PROCELLA_AUTH_CACHE_SECONDS``. Through the API, only a token of a member of
        ``org``, by its admins."""
        if principal is not None:
            assert org is not None
            principal.require(org, Role.ADMIN)
        async with self.meta.transaction() as conn:
            found = await auth_q.list_tokens(conn, org, token_id=token_id)
            if not found or not await auth_q.revoke_token(conn, token_id):
                raise NotFound(f"token '{token_id}' not found, or revoked already")
            org_id = None if org is None else await auth_q.org_id(conn, org)
            token = found[0]
            await audit.record(
                conn,
                org_id,
                principal,
                audit.TOKEN_REVOKE,
                token.login,
                f"revoked token {token.name!r} of {token.login}",
            )
        self.cache.clear()


@dataclass(frozen=True)
class IssuedToken:
    id: str
    token: str  # the secret: shown once, stored only as its hash
    expires_at: int | None  # epoch ms


async def _principal(conn: Connection, record: PrincipalRecord) -> Principal:
    """The principal of a token: a person's roles and their teams' grants, or a team
    token's team and its grants only."""
    if record.team is not None:
        team_id, org, name = record.team
        rows = await team_q.grants_of_team(conn, team_id)
        team: TeamRef | None = TeamRef(team_id, org, name)
        roles: dict[str, Role] = {}
    else:
        rows = await team_q.grants_of_user(conn, record.user_id)
        team = None
        roles = {org: Role.parse(role) for org, role in record.roles.items()}
    grants = tuple(Grant(g.org, g.project, g.stack, Role.parse(g.role), g.team) for g in rows)
    return Principal(
        record.user_id,
        record.login,
        record.token_name,
        record.site_admin and team is None,
        roles,
        record.token_id,
        grants,
        team,
    )


async def store_token(
    conn: Connection,
    user_id: str,
    name: str,
    token: str,
    taken: str,
    **fields: Any,
) -> str:
    """Store ``token`` (its hash) for the user; its id. ``fields`` go to
    ``auth_q.insert_token``; a name the user has already is AlreadyExists(``taken``)."""
    try:
        return await auth_q.insert_token(conn, user_id, name, token_hash(token), **fields)
    except UniqueViolation:
        raise AlreadyExists(taken) from None


def until(expires_at: int | None) -> str:
    """ ", expires <when>" for an audit description, or nothing for a token for good."""
    return "" if expires_at is None else f", expires {iso(expires_at)}"


def expiry(expires_in: float | None) -> int | None:
    """The epoch ms a token lifetime of ``expires_in`` seconds ends at (None: never)."""
    if expires_in is None:
        return None
    if expires_in <= 0:
        raise BadRequest("a token's expiry must be in the future")
    return int((time.time() + expires_in) * 1000)


def iso(epoch_ms: int) -> str:
    """An epoch-ms time as ISO 8601, to the second, in UTC."""
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="seconds")
