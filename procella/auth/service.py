"""API tokens: who a token belongs to, the bootstrap administrator, minting new tokens."""

from __future__ import annotations

import logging
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


class AuthService:
    def __init__(self, meta: MetadataStore) -> None:
        self.meta = meta

    async def authenticate(self, token: str) -> Principal:
        async with self.meta.read() as conn:
            record = await auth_q.principal_by_token_hash(conn, token_hash(token))
        if record is None:
            raise Unauthorized("invalid access token")
        roles = {org: Role.parse(role) for org, role in record.roles.items()}
        return Principal(record.user_id, record.login, record.token_name, record.site_admin, roles)

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
        return token
