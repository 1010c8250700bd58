"""OIDC issuers and token exchange: what an org admin registers, and what a CI job's ID
token is exchanged for (``pulumi login --oidc-token``). The rules are in
``procella.auth.oidc``, the key fetching in ``procella.auth.jwks``."""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass
from typing import Any

from procella import audit
from procella.auth import oidc
from procella.auth.jwks import IssuerUnavailable, JwksCache, check_issuer_url
from procella.auth.models import Principal, Role
from procella.auth.service import AuthService
from procella.errors import AlreadyExists, BadRequest, Conflict, NotFound, ProcellaError
from procella.metadata.base import IssuerRow, MetadataStore, UniqueViolation
from procella.metadata.queries import auth as auth_q
from procella.metadata.queries import oidc as oidc_q
from procella.settings import Settings
from procella.stacks.models import check_org_name

log = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")
MAX_AUDIENCES = 20


@dataclass(frozen=True)
class Exchanged:
    """A minted access token, in the terms of the OAuth answer."""

    token: str
    token_type: str  # organization | team | personal
    expires_in: int  # seconds
    scope: str


class OidcService:
    def __init__(self, meta: MetadataStore, auth: AuthService, settings: Settings) -> None:
        self.meta = meta
        self.auth = auth
        self.allow_private = settings.oidc_allow_private_issuers
        self.server_max_s = settings.oidc_max_expiration_seconds
        self.jwks = JwksCache(settings.oidc_jwks_cache_seconds, self.allow_private)

    # Registration (org admins) -----------------------------------------------------------

    async def register_issuer(
        self,
        principal: Principal | None,
        org: str,
        name: str,
        url: str,
        audiences: list[str] | None = None,
        max_expiration_s: int | None = None,
    ) -> IssuerRow:
        """Trust ``url``'s tokens in ``org`` (with no policy yet: nothing is allowed until
        policies are set). Audiences default to ``urn:pulumi:org:<org>``, what the CLI
        reads the org from."""
        check_org_name(org)
        if principal is not None:
            principal.require(org, Role.ADMIN)
        if not _NAME.fullmatch(name):
            raise BadRequest("an issuer name must be 1-100 of A-Z a-z 0-9 . _ -")
        url = check_issuer_url(url, self.allow_private)
        audiences = audiences or [f"{oidc.AUDIENCE_PREFIX}{org}"]
        if len(audiences) > MAX_AUDIENCES or not all(
            isinstance(a, str) and 0 < len(a) <= 500 for a in audiences
        ):
            raise BadRequest(f"audiences must be 1-{MAX_AUDIENCES} non-empty strings")
        max_s = self.server_max_s if max_expiration_s is None else max_expiration_s
        if not 0 < max_s <= self.server_max_s:
            raise BadRequest(
                f"maxExpiration must be 1 to {self.server_max_s} seconds "
                "(PROCELLA_OIDC_MAX_EXPIRATION_SECONDS)"
            )
        async with self.meta.transaction() as conn:
            org_id = await auth_q.ensure_org(conn, org)
            try:
                issuer_id = await oidc_q.insert(conn, org_id, name, url, audiences, max_s)
            except UniqueViolation:
                raise AlreadyExists(
                    f"'{org}' has an issuer named '{name}' or with this URL already"
                ) from None
            await audit.record(
                conn,
                org_id,
                principal,
                audit.OIDC_ISSUER_CREATE,
                name,
                f"registered OIDC issuer {name!r} ({url})",
            )
            found = await oidc_q.get(conn, org, issuer_id)
        assert found is not None
        return found

    async def list_issuers(self, principal: Principal | None, org: str) -> list[IssuerRow]:
        check_org_name(org)
        if principal is not None:
            principal.require(org, Role.ADMIN)
        async with self.meta.read() as conn:
            return await oidc_q.list_for_org(conn, org)

    async def issuer(self, principal: Principal | None, org: str, issuer_id: str) -> IssuerRow:
        check_org_name(org)
        if principal is not None:
            principal.require(org, Role.ADMIN)
        async with self.meta.read() as conn:
            found = await oidc_q.get(conn, org, issuer_id)
        if found is None:
            raise NotFound(f"OIDC issuer '{issuer_id}' not found")
        return found

    async def delete_issuer(self, principal: Principal | None, org: str, issuer_id: str) -> int:
        """Stop trusting the issuer, and revoke the tokens it minted; how many."""
        found = await self.issuer(principal, org, issuer_id)
        async with self.meta.transaction() as conn:
            revoked = await oidc_q.delete(conn, issuer_id)
            await audit.record(
                conn,
                await auth_q.org_id(conn, org),
                principal,
                audit.OIDC_ISSUER_DELETE,
                found.name,
                f"deleted OIDC issuer {found.name!r}, revoking {revoked} token(s) it minted",
            )
        self.auth.cache.clear()
        return revoked

    async def set_policies(
        self,
        principal: Principal | None,
        org: str,
        issuer_id: str,
        policies: list[oidc.Policy],
        expected_version: int | None = None,
    ) -> IssuerRow:
        """Replace the issuer's policies. With ``expected_version``, only if nobody changed
        them since (409 otherwise). Tokens minted earlier keep working until they expire
        or the issuer is deleted."""
        found = await self.issuer(principal, org, issuer_id)
        stored = [policy.to_json() for policy in policies]
        async with self.meta.transaction() as conn:
            version = await oidc_q.set_policies(conn, issuer_id, stored, expected_version)
            if version is None:
                raise Conflict(
                    f"the policies of issuer '{found.name}' changed since version "
                    f"{expected_version}: read them again"
                )
            await audit.record(
                conn,
                await auth_q.org_id(conn, org),
                principal,
                audit.OIDC_POLICY_UPDATE,
                found.name,
                f"set {len(stored)} polic{'y' if len(stored) == 1 else 'ies'} of OIDC issuer "
                f"{found.name!r} (version {version})",
            )
            updated = await oidc_q.get(conn, org, issuer_id)
        assert updated is not None
        return updated

    # Exchange (anyone holding an ID token) ---------------------------------------------

    async def exchange(self, request: oidc.ExchangeRequest) -> Exchanged:
        """Verify the ID token against the org's issuer and policies; mint a token."""
        header = oidc.unverified_header(request.subject_token)
        issuer_url = oidc.unverified_issuer(request.subject_token).rstrip("/")
        async with self.meta.read() as conn:
            issuer = await oidc_q.by_url(conn, request.org, issuer_url)
        if issuer is None:
            raise oidc.invalid_grant(
                f"organization '{request.org}' trusts no OIDC issuer {issuer_url!r}"
            )
        claims = await self._verified_claims(request.subject_token, header, issuer)
        policies = oidc.parse_policies(issuer.policies)
        policy = oidc.choose(policies, request.token_type, request.team, request.user, claims)
        seconds = oidc.granted_seconds(
            request.expiration, policy.max_expiration_s, issuer.max_expiration_s, self.server_max_s
        )
        token = await self._mint(request, issuer, policy, claims, seconds)
        return Exchanged(token, request.token_type, seconds, request.scope)

    async def _verified_claims(
        self, token: str, header: dict[str, Any], issuer: IssuerRow
    ) -> dict[str, Any]:
        try:
            keys = await self.jwks.keys(issuer.url)
            try:
                key = oidc.pick_key(keys, header)
            except oidc.UnknownKey:
                key = oidc.pick_key(await self.jwks.keys(issuer.url, refetch=True), header)
        except oidc.UnknownKey as exc:
            raise oidc.invalid_grant(f"issuer {issuer.name!r} has no key {exc}") from None
        except IssuerUnavailable as exc:
            log.warning("OIDC issuer %s unavailable: %s", issuer.url, exc)
            raise oidc.invalid_grant(f"issuer {issuer.name!r}'s keys: {exc}") from None
        return oidc.verify(token, key, header, issuer.url, issuer.audiences)

    async def _mint(
        self,
        request: oidc.ExchangeRequest,
        issuer: IssuerRow,
        policy: oidc.Policy,
        claims: dict[str, Any],
        seconds: int,
    ) -> str:
        subject = str(claims.get("sub"))[:200]
        name = f"oidc-{issuer.name}-{secrets.token_hex(4)}"
        description = f"OIDC {issuer.name}: {subject}"[:200]
        fields: dict[str, Any] = {
            "description": description,
            "expires_in": seconds,
            "actor": audit.OidcSubject(issuer.name, subject),
            "oidc_issuer_id": issuer.id,
        }
        try:  # a refusal while minting (no such team or member) is the exchange's refusal
            if request.token_type == "team":
                issued = await self.auth.create_team_token(request.org, policy.team, name, **fields)
            elif request.token_type == "personal":
                issued = await self.auth.create_token(
                    request.org, None, policy.user, name, **fields
                )
            else:
                assert policy.role is not None
                login = f"{request.org}-{policy.role.name.lower()}"
                issued = await self.auth.create_token(
                    request.org, policy.role, login, name, **fields
                )
        except ProcellaError as exc:
            raise oidc.invalid_grant(exc.message) from None
        return issued.token
