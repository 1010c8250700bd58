"""A user's own API tokens, as the console's ``/account/tokens`` manages them.

Unlike ``/api/orgs/<org>/tokens`` (an org admin minting tokens for anyone with any role),
this lets every user list, create and revoke only their *own* tokens. A token carries no
role of its own: it acts with its user's memberships, so a new token can do exactly what
the token that made it can. Each change is in the audit log of every org the user belongs
to, as ``token.create`` / ``token.revoke``, since each of those org admins can see it.
"""

from __future__ import annotations

from procella import audit
from procella.auth.models import Principal, new_api_token
from procella.auth.service import AuthService, IssuedToken, expiry, store_token, until
from procella.errors import BadRequest, Forbidden, NotFound
from procella.metadata.base import Connection, TokenRow
from procella.metadata.queries import auth as auth_q

MAX_NAME = 100


class OwnTokens:
    def __init__(self, auth: AuthService) -> None:
        self.auth = auth
        self.meta = auth.meta

    async def list(self, principal: Principal) -> list[TokenRow]:
        _refuse_team(principal)
        async with self.meta.read() as conn:
            return await auth_q.list_tokens(conn, login=principal.login)

    async def create(
        self, principal: Principal, name: str, expires_in: float | None, description: str = ""
    ) -> IssuedToken:
        _refuse_team(principal)
        name = name.strip()
        if not name or len(name) > MAX_NAME or any(ord(c) < 32 for c in name):
            raise BadRequest(f"a token's name must be 1-{MAX_NAME} printable characters")
        token = new_api_token()
        expires_at = expiry(expires_in)
        async with self.meta.transaction() as conn:
            token_id = await store_token(
                conn,
                principal.user_id,
                name,
                token,
                f"you already have a token named {name!r}",
                description=description[: MAX_NAME * 2],
                expires_at=expires_at,
            )
            await self._record(
                conn,
                principal,
                audit.TOKEN_CREATE,
                f"created token {name!r} for {principal.login} in the console" + until(expires_at),
            )
        return IssuedToken(token_id, token, expires_at)

    async def revoke(self, principal: Principal, token_id: str) -> None:
        _refuse_team(principal)
        async with self.meta.transaction() as conn:
            found = await auth_q.list_tokens(conn, login=principal.login, token_id=token_id)
            if not found or not await auth_q.revoke_token(conn, token_id):
                raise NotFound(f"token '{token_id}' not found, or revoked already")
            await self._record(
                conn,
                principal,
                audit.TOKEN_REVOKE,
                f"revoked token {found[0].name!r} of {principal.login} in the console",
            )
        self.auth.cache.clear()  # here at once; other replicas within the cache's ttl

    async def _record(
        self, conn: Connection, principal: Principal, action: str, description: str
    ) -> None:
        org_ids: list[str | None] = []
        for org in principal.orgs:
            found = await auth_q.org_id(conn, org)
            if found is not None:
                org_ids.append(found)
        for org_id in org_ids or [None]:
            await audit.record(conn, org_id, principal, action, principal.login, description)


def _refuse_team(principal: Principal) -> None:
    """A team token is no person: its team's tokens are its org admins' to manage."""
    if principal.team is not None:
        raise Forbidden(
            "a team token has no tokens of its own: an admin of "
            f"'{principal.team.org}' manages team {principal.team.name}'s tokens"
        )
