"""An OIDC issuer's signing keys: discovered, fetched safely, cached for a bounded time.

``<issuer>/.well-known/openid-configuration`` names ``jwks_uri``; the key set found there is
kept for ``PROCELLA_OIDC_JWKS_CACHE_SECONDS`` and fetched again early when a token names a
key it lacks (an issuer rotating its keys), at most every ``MIN_REFETCH_SECONDS`` so tokens
with made-up key ids cannot make us hammer the issuer.

Issuer URLs come from org admins, so fetching them must not reach into the servers' own
network: unless ``PROCELLA_OIDC_ALLOW_PRIVATE_ISSUERS`` is on, only https to public
addresses. The check is made on the addresses a connection actually uses (a resolver that
refuses private ones), not on a lookup made earlier, and redirects are not followed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import jwt
from aiohttp.abc import AbstractResolver, ResolveResult

from procella.errors import BadRequest

MIN_REFETCH_SECONDS = 1.0
FETCH_TIMEOUT_SECONDS = 10.0
MAX_DOCUMENT_BYTES = 512 * 1024
MAX_CACHED_ISSUERS = 1000


class IssuerUnavailable(Exception):
    """The issuer's discovery document or keys could not be fetched or read."""


def check_issuer_url(url: str, allow_private: bool) -> str:
    """``url`` as an issuer URL (no trailing slash), or BadRequest saying why not."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise BadRequest("an issuer URL must be an absolute https URL")
    if parts.scheme == "http" and not allow_private:
        raise BadRequest(
            "an issuer URL must use https (PROCELLA_OIDC_ALLOW_PRIVATE_ISSUERS allows http)"
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise BadRequest("an issuer URL has no query, fragment or credentials")
    try:
        literal = ipaddress.ip_address(parts.hostname)
    except ValueError:
        literal = None
    if literal is not None and not allow_private and not literal.is_global:
        raise BadRequest(
            f"issuer address {literal} is private, loopback or link-local "
            "(PROCELLA_OIDC_ALLOW_PRIVATE_ISSUERS allows it)"
        )
    return url.rstrip("/")


class PublicOnlyResolver(AbstractResolver):
    """Resolves names as usual, then refuses if any address is not a public one."""

    def __init__(self) -> None:
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        for entry in found:
            address = ipaddress.ip_address(entry["host"])
            if not address.is_global:
                raise IssuerUnavailable(
                    f"{host} resolves to {address}, a private, loopback or link-local address "
                    "(PROCELLA_OIDC_ALLOW_PRIVATE_ISSUERS allows it)"
                )
        return found

    async def close(self) -> None:
        await self._inner.close()


@dataclass
class _Entry:
    keys: list[jwt.PyJWK]
    fetched_at: float


class JwksCache:
    """Signing keys per issuer URL, shared by the requests of one replica."""

    def __init__(
        self,
        ttl: float,
        allow_private: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.allow_private = allow_private
        self.clock = clock
        self._entries: dict[str, _Entry] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def keys(self, issuer: str, *, refetch: bool = False) -> list[jwt.PyJWK]:
        """The issuer's keys: cached, or fetched if stale, missing, or ``refetch`` is asked
        (and the last fetch is older than ``MIN_REFETCH_SECONDS``)."""
        lock = self._locks.setdefault(issuer, asyncio.Lock())
        async with lock:  # concurrent misses for one issuer fetch once
            entry = self._entries.get(issuer)
            age = None if entry is None else self.clock() - entry.fetched_at
            if entry is not None and age is not None:
                fresh = age < self.ttl and not (refetch and age >= MIN_REFETCH_SECONDS)
                if fresh:
                    return entry.keys
            keys = await self._fetch(issuer)
            if len(self._entries) >= MAX_CACHED_ISSUERS:
                self._entries.clear()
            self._entries[issuer] = _Entry(keys, self.clock())
            return keys

    async def _fetch(self, issuer: str) -> list[jwt.PyJWK]:
        connector = aiohttp.TCPConnector(
            resolver=None if self.allow_private else PublicOnlyResolver(), use_dns_cache=False
        )
        timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT_SECONDS)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            discovery = await self._get_json(session, issuer + "/.well-known/openid-configuration")
            if not isinstance(discovery, dict) or discovery.get("issuer", "").rstrip("/") != issuer:
                raise IssuerUnavailable(
                    "the discovery document's 'issuer' is not the registered issuer URL"
                )
            jwks_uri = discovery.get("jwks_uri")
            if not isinstance(jwks_uri, str):
                raise IssuerUnavailable("the discovery document has no 'jwks_uri'")
            try:
                check_issuer_url(jwks_uri, self.allow_private)
            except BadRequest as exc:
                raise IssuerUnavailable(f"jwks_uri: {exc.message}") from None
            return parse_key_set(await self._get_json(session, jwks_uri))

    async def _get_json(self, session: aiohttp.ClientSession, url: str) -> Any:
        try:
            async with session.get(url, allow_redirects=False) as response:
                body = await response.content.read(MAX_DOCUMENT_BYTES + 1)
                if response.status != 200:
                    raise IssuerUnavailable(f"{url} answered {response.status}")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            reason = str(exc) or type(exc).__name__
            raise IssuerUnavailable(f"{url} could not be fetched: {reason}") from None
        if len(body) > MAX_DOCUMENT_BYTES:
            raise IssuerUnavailable(f"{url} is larger than {MAX_DOCUMENT_BYTES} bytes")
        try:
            return json.loads(body)
        except ValueError:
            raise IssuerUnavailable(f"{url} is not JSON") from None


def parse_key_set(document: Any) -> list[jwt.PyJWK]:
    """The signing keys of a JWKS document that PyJWT can use; others are skipped."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise IssuerUnavailable("the key set has no 'keys' list")
    keys: list[jwt.PyJWK] = []
    for item in document["keys"]:
        if not isinstance(item, dict) or item.get("use", "sig") != "sig":
            continue
        try:
            keys.append(jwt.PyJWK(item))
        except jwt.PyJWTError:
            continue  # a key type or curve we do not verify with
    if not keys:
        raise IssuerUnavailable("the key set has no usable signing key")
    return keys
