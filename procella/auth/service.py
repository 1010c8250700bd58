"""API tokens: who a token belongs to, the bootstrap administrator, minting new tokens."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from procella import audit
from procella.auth.models import Principal, Role, new_api_token, token_hash
from procella.errors import Unauthorized
from procella.metadata.base import MetadataStore
from procella.metadata.queries import auth as auth_q
from procella.stacks.models import check_org_name

log = logging.getLogger(__name__)

ADMIN_LOGIN = "admin"
ADMIN_TOKEN_NAME = "bootstrap"


@dataclass(frozen=True)
class Bootstrap:
    """The outcome of ``ensure_admin``: a token to show once, if one was generated."""

    generated_token: str | None


class PrincipalCache:
    """What a replica read about a token, reused for ``ttl`` seconds: most requests then
    need no statement to authenticate. So a role change (or, once tokens can be revoked, a
    revocation) takes effect on every replica within ``ttl``. Unknown tokens are never
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

    def put(self, key: str, principal: Principal) -> None:
        if self.ttl <= 0:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()  # rare (a flood of distinct tokens); refilled by use
        self._entries[key] = (self.clock() + self.ttl, principal)


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
        roles = {org: Role.parse(role) for org, role in record.roles.items()}
        found = Principal(record.user_id, record.login, record.token_name, record.site_admin, roles)
        self.cache.put(key, found)
        return found

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

    async def create_token(self, org: str, role: Role, login: str, name: str) -> str:
        """Mint a token for ``login`` (created if needed) with ``role`` in ``org``."""
        check_org_name(org)
        token = new_api_token()
        async with self.meta.transaction() as conn:
            org_id = await auth_q.ensure_org(conn, org)
            user_id = await auth_q.ensure_user(conn, login)
            await auth_q.set_membership(conn, user_id, org_id, role.name.lower())
            await auth_q.insert_token(conn, user_id, name, token_hash(token))
            await audit.record(
                conn,
                org_id,
                None,
                audit.TOKEN_CREATE,
                login,
                f"created token {name!r} for {login} ({role.name.lower()} in {org})",
            )
        self.cache.clear()  # the user's role may have changed: here at once, elsewhere in ttl
        return token
