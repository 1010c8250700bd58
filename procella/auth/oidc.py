"""OIDC token exchange, the pure part: trust policies, claim matching, token verification.

An org admin registers an issuer (its URL, the audiences its tokens must carry, the longest
a minted token may live) and a list of policies. ``pulumi login --oidc-token`` sends the
issuer's ID token to ``POST /api/oauth/token``; the first policy whose token type, team or
user and claim rules all match decides: ``allow`` mints a Procella token, ``deny`` refuses.
Signatures are checked by PyJWT against the issuer's published keys (``procella.auth.jwks``
fetches them); nothing here does I/O.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

import jwt

from procella.auth.models import Role
from procella.errors import BadRequest

# Asymmetric algorithms only: ``none`` and the HMAC family (a shared secret, which an issuer
# never shares with us) are refused before any key is looked at.
ALGORITHMS = ("RS256", "ES256")
CLOCK_SKEW_SECONDS = 60
TOKEN_TYPES = ("organization", "team", "personal")
DECISIONS = ("allow", "deny")
# requested_token_type values the CLI sends (pkg/backend/httpstate/client ExchangeOidcToken).
TOKEN_TYPE_URN = "urn:pulumi:token-type:access_token:"
AUDIENCE_PREFIX = "urn:pulumi:org:"
MAX_POLICIES = 100
MAX_RULES = 20


class ExchangeError(Exception):
    """A refused exchange, in the OAuth error shape (RFC 6749 section 5.2)."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


def invalid_grant(description: str) -> ExchangeError:
    return ExchangeError("invalid_grant", description)


class UnknownKey(Exception):
    """The token names a key the cached key set lacks: fetch the keys again, once."""


@dataclass(frozen=True)
class Policy:
    """One rule of an issuer's policy list.

    ``rules`` maps a claim (a dotted path reaches into objects, e.g.
    ``kubernetes.io.namespace``) to a pattern: an exact value, or a glob with ``*`` and
    ``?``. A claim holding a list matches if any element does.
    """

    decision: str
    token_type: str
    rules: dict[str, str]
    role: Role | None = None  # organization tokens: the role they act with
    team: str = ""  # team tokens
    user: str = ""  # personal tokens: the member they act as
    max_expiration_s: int | None = None  # the longest a token it mints may live

    def covers(self, token_type: str, team: str, user: str) -> bool:
        if token_type != self.token_type:
            return False
        if token_type == "team":
            return team == self.team
        if token_type == "personal":
            return user == self.user
        return True

    def matches(self, claims: dict[str, Any]) -> bool:
        return all(_matches(pattern, claim(claims, name)) for name, pattern in self.rules.items())

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "decision": self.decision,
            "tokenType": self.token_type,
            "rules": dict(self.rules),
        }
        if self.role is not None:
            out["role"] = self.role.name.lower()
        if self.team:
            out["teamName"] = self.team
        if self.user:
            out["userLogin"] = self.user
        if self.max_expiration_s is not None:
            out["maxExpiration"] = self.max_expiration_s
        return out


_MISSING = object()


def claim(claims: dict[str, Any], path: str) -> Any:
    """The claim at ``path``: a top-level name first (``kubernetes.io`` is one), else the
    longest leading name that is present, then the rest of the path inside it."""
    if path in claims:
        return claims[path]
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        head = ".".join(parts[:cut])
        inner = claims.get(head)
        if isinstance(inner, dict):
            return claim(inner, ".".join(parts[cut:]))
    return _MISSING


def _matches(pattern: str, value: Any) -> bool:
    if value is _MISSING or value is None:
        return False
    if isinstance(value, list):
        return any(_matches(pattern, item) for item in value)
    if isinstance(value, bool):
        value = "true" if value else "false"
    if isinstance(value, dict):
        return False
    return fnmatch.fnmatchcase(str(value), pattern)


def choose(
    policies: list[Policy], token_type: str, team: str, user: str, claims: dict[str, Any]
) -> Policy:
    """The first policy that covers the request and matches the claims, if it allows."""
    for policy in policies:
        if policy.covers(token_type, team, user) and policy.matches(claims):
            if policy.decision == "deny":
                raise invalid_grant("a deny policy of this issuer matches the token")
            return policy
    wanted = {"team": f" for team '{team}'", "personal": f" for user '{user}'"}.get(token_type, "")
    raise invalid_grant(
        f"no policy of this issuer allows an {token_type} token{wanted} "
        f"for this token's claims (sub: {claims.get('sub')!r})"
    )


def parse_policies(value: Any) -> list[Policy]:
    """Policies from the API's JSON (``{"policies": [...]}``'s list); BadRequest if wrong."""
    if not isinstance(value, list):
        raise BadRequest("field 'policies' must be a list")
    if len(value) > MAX_POLICIES:
        raise BadRequest(f"at most {MAX_POLICIES} policies per issuer")
    return [_parse_policy(item, index) for index, item in enumerate(value)]


def _parse_policy(item: Any, index: int) -> Policy:
    where = f"policies[{index}]"
    if not isinstance(item, dict):
        raise BadRequest(f"{where} must be an object")
    decision = item.get("decision", "allow")
    token_type = item.get("tokenType")
    if decision not in DECISIONS:
        raise BadRequest(f"{where}.decision must be allow or deny")
    if token_type not in TOKEN_TYPES:
        raise BadRequest(f"{where}.tokenType must be one of {', '.join(TOKEN_TYPES)}")
    rules = _parse_rules(item.get("rules"), where)
    longest = item.get("maxExpiration")
    if longest is not None and (
        isinstance(longest, bool) or not isinstance(longest, int) or not 0 < longest < 2**31
    ):
        raise BadRequest(f"{where}.maxExpiration must be a positive number of seconds")
    if token_type == "organization":
        role = _role(item.get("role", "member"), where)
        return Policy(decision, token_type, rules, role=role, max_expiration_s=longest)
    key = "teamName" if token_type == "team" else "userLogin"
    name = item.get(key)
    if not isinstance(name, str) or not name.strip() or len(name) > 100:
        raise BadRequest(f"{where}.{key} is required for a {token_type} token")
    if token_type == "team":
        return Policy(decision, token_type, rules, team=name, max_expiration_s=longest)
    return Policy(decision, token_type, rules, user=name, max_expiration_s=longest)


def _role(value: Any, where: str) -> Role:
    if not isinstance(value, str):
        raise BadRequest(f"{where}.role must be viewer, member or admin")
    try:
        return Role.parse(value)
    except ValueError as exc:
        raise BadRequest(f"{where}.role: {exc}") from None


def _parse_rules(value: Any, where: str) -> dict[str, str]:
    """Claim rules; at least one must pin a claim to more than a bare wildcard, so a
    policy never trusts every token an issuer mints (GitHub's is shared by everyone)."""
    if not isinstance(value, dict) or not value:
        raise BadRequest(f"{where}.rules must be a non-empty object of claim -> pattern")
    if len(value) > MAX_RULES:
        raise BadRequest(f"{where}.rules: at most {MAX_RULES} rules")
    rules: dict[str, str] = {}
    for name, pattern in value.items():
        if not isinstance(pattern, str) or not pattern or len(pattern) > 500:
            raise BadRequest(f"{where}.rules[{name!r}] must be a non-empty string")
        if not name or len(name) > 200:
            raise BadRequest(f"{where}.rules: claim names must be 1-200 characters")
        rules[name] = pattern
    if all(set(pattern) <= {"*", "?"} for pattern in rules.values()):
        raise BadRequest(f"{where}.rules: at least one rule must pin a claim, not only '*'")
    return rules


@dataclass(frozen=True)
class ExchangeRequest:
    """The form ``pulumi login --oidc-token`` posts, checked for shape."""

    org: str
    token_type: str  # organization | team | personal
    team: str
    user: str
    subject_token: str
    expiration: int  # seconds asked for
    scope: str = field(default="")


def parse_request(form: dict[str, str]) -> ExchangeRequest:
    """Check the RFC 8693 form the CLI sends; ExchangeError with the OAuth code if wrong."""
    grant = form.get("grant_type", "")
    if grant != "urn:ietf:params:oauth:grant-type:token-exchange":
        raise ExchangeError("unsupported_grant_type", f"unsupported grant_type {grant!r}")
    subject_type = form.get("subject_token_type", "")
    if subject_type not in (
        "urn:ietf:params:oauth:token-type:id_token",
        "urn:ietf:params:oauth:token-type:jwt",
    ):
        raise ExchangeError("invalid_request", "subject_token_type must be an id_token or a jwt")
    audience = form.get("audience", "")
    if not audience.startswith(AUDIENCE_PREFIX) or len(audience) == len(AUDIENCE_PREFIX):
        raise ExchangeError("invalid_request", f"audience must be {AUDIENCE_PREFIX}<org>")
    scope = form.get("scope", "")
    team = scope.removeprefix("team:") if scope.startswith("team:") else ""
    user = scope.removeprefix("user:") if scope.startswith("user:") else ""
    if scope and not (team or user):
        raise ExchangeError("invalid_scope", "scope must be empty, team:<name> or user:<login>")
    token_type = "team" if team else "personal" if user else "organization"
    requested = form.get("requested_token_type", TOKEN_TYPE_URN + token_type)
    if requested != TOKEN_TYPE_URN + token_type:
        raise ExchangeError(
            "invalid_request", f"requested_token_type {requested!r} does not fit scope {scope!r}"
        )
    try:
        expiration = int(form.get("expiration") or 7200)
    except ValueError:
        raise ExchangeError("invalid_request", "expiration must be whole seconds") from None
    if expiration <= 0:
        raise ExchangeError("invalid_request", "expiration must be positive")
    token = form.get("subject_token", "")
    if not token:
        raise ExchangeError("invalid_request", "subject_token is required")
    org = audience[len(AUDIENCE_PREFIX) :]
    return ExchangeRequest(org, token_type, team, user, token, expiration, scope)


def unverified_header(token: str) -> dict[str, Any]:
    """The token's header, refusing an algorithm we never accept before anything else."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise invalid_grant(f"the subject token is not a JWT: {exc}") from None
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise invalid_grant(f"token algorithm {alg!r} is not accepted: use RS256 or ES256")
    return header


def unverified_issuer(token: str) -> str:
    """``iss``, read before the signature is checked: it only says which keys to check with."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise invalid_grant(f"the subject token is not a JWT: {exc}") from None
    issuer = claims.get("iss")
    if not isinstance(issuer, str) or not issuer:
        raise invalid_grant("the subject token has no 'iss' claim")
    return issuer


def pick_key(keys: list[jwt.PyJWK], header: dict[str, Any]) -> jwt.PyJWK:
    """The key the header names (by ``kid``), or the only key if the header names none."""
    kid = header.get("kid")
    if kid is None:
        if len(keys) == 1:
            return keys[0]
        raise invalid_grant("the token names no key ('kid') and the issuer has several")
    for key in keys:
        if key.key_id == kid:
            if key.algorithm_name != header["alg"]:  # a key published for another algorithm
                raise invalid_grant(f"key {kid!r} is not an {header['alg']} key")
            return key
    raise UnknownKey(kid)


def verify(
    token: str, key: jwt.PyJWK, header: dict[str, Any], issuer: str, audiences: list[str]
) -> dict[str, Any]:
    """The token's claims once its signature, issuer, audience and times check out."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key.key,
            algorithms=[header["alg"]],
            audience=audiences,
            issuer=issuer,
            leeway=CLOCK_SKEW_SECONDS,
            options={"require": ["exp", "iat", "iss", "aud", "sub"]},
        )
    except jwt.ExpiredSignatureError:
        raise invalid_grant("the subject token has expired") from None
    except jwt.InvalidAudienceError:
        raise invalid_grant(
            f"the subject token's audience is not one this issuer is trusted for "
            f"({', '.join(audiences)})"
        ) from None
    except jwt.InvalidSignatureError:
        raise invalid_grant("the subject token's signature does not verify") from None
    except jwt.PyJWTError as exc:
        raise invalid_grant(f"the subject token is not valid: {exc}") from None
    return claims


def granted_seconds(asked: int, *maximums: int | None) -> int:
    """What a minted token lives: as asked, but never beyond any maximum (None: none)."""
    return max(1, min([asked, *(m for m in maximums if m is not None)]))
