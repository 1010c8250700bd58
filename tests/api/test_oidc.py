"""OIDC token exchange against a real issuer (procella_testing/oidc_issuer.py, on 127.0.0.1): org
admins register issuers and policies; an ID token that verifies and matches a policy is
exchanged for a Procella token; every refusal is an OAuth error that mints nothing."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any
from urllib.parse import urlencode

import jwt
import pytest
from quart import typing as quart_typing

from procella.auth.jwks import MIN_REFETCH_SECONDS, IssuerUnavailable, JwksCache
from procella.auth.models import Role
from procella_testing.oidc_issuer import OidcIssuer, SigningKey, running_issuer
from tests.helpers import DEFAULT_ORG, Api, assert_error, body_json, make_token, services_of

ISSUERS = f"/api/orgs/{DEFAULT_ORG}/oidc/issuers"
POLICIES = f"/api/orgs/{DEFAULT_ORG}/auth/policies/oidcissuers"
GITHUB_RULES = {"repository": "acme/infra", "ref": "refs/heads/*"}
AppApi = tuple[quart_typing.TestAppProtocol, Api]


@pytest.fixture
def issuer() -> Iterator[OidcIssuer]:
    with running_issuer() as running:
        yield running


@pytest.fixture
async def oidc_app(
    custom_app: Callable[..., AbstractAsyncContextManager[AppApi]],
) -> AsyncIterator[AppApi]:
    """The app with private issuers allowed: the test issuer is on 127.0.0.1."""
    async with custom_app(oidc_allow_private_issuers=True) as found:
        yield found


async def register(api: Api, issuer: OidcIssuer, **body: Any) -> dict[str, Any]:
    response = await api.call("POST", ISSUERS, {"name": "ci", "url": issuer.url, **body})
    assert response.status_code == 201, await response.get_data()
    created: dict[str, Any] = await body_json(response)
    return created


async def set_policies(api: Api, issuer_id: str, *policies: dict[str, Any]) -> Any:
    return await api.call("PATCH", f"{POLICIES}/{issuer_id}", {"policies": list(policies)})


def allow(token_type: str = "organization", **fields: Any) -> dict[str, Any]:
    return {"decision": "allow", "tokenType": token_type, "rules": GITHUB_RULES, **fields}


def github_claims(**over: Any) -> dict[str, Any]:
    claims = {
        "sub": "repo:acme/infra:ref:refs/heads/main",
        "repository": "acme/infra",
        "repository_owner": "acme",
        "ref": "refs/heads/main",
        "workflow": "deploy",
    }
    return {**claims, **over}


async def exchange(
    api: Api,
    token: str,
    *,
    org: str = DEFAULT_ORG,
    scope: str = "",
    expiration: int = 3600,
    **form: str,
) -> Any:
    kind = {"team:": "team", "user:": "personal"}.get(scope[:5], "organization")
    fields = {
        "audience": f"urn:pulumi:org:{org}",
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "requested_token_type": f"urn:pulumi:token-type:access_token:{kind}",
        "scope": scope,
        "subject_token_type": "urn:ietf:params:oauth:token-type:id_token",
        "subject_token": token,
        "expiration": str(expiration),
        **form,
    }
    return await api.call(
        "POST",
        "/api/oauth/token",
        raw=urlencode(fields).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded", "Authorization": ""},
    )


async def refused(response: Any, error: str = "invalid_grant") -> str:
    raw = await response.get_data()
    assert response.status_code == 400, raw
    body = json.loads(raw)
    assert body["error"] == error, body
    assert isinstance(body["error_description"], str) and body["error_description"]
    return str(body["error_description"])


async def token_count(api: Api) -> int:
    body = await body_json(await api.call("GET", f"/api/orgs/{DEFAULT_ORG}/tokens"))
    return len(body["tokens"])


async def test_an_allowed_token_is_exchanged_for_an_org_token(
    oidc_app: AppApi, issuer: OidcIssuer
) -> None:
    _, api = oidc_app
    created = await register(api, issuer, maxExpiration=1800)
    assert created["audiences"] == [f"urn:pulumi:org:{DEFAULT_ORG}"]
    assert (await set_policies(api, created["id"], allow(role="member"))).status_code == 200

    response = await exchange(api, issuer.token(github_claims()), expiration=7200)
    assert response.status_code == 200, await response.get_data()
    assert response.headers["Cache-Control"] == "no-store"
    answer = await body_json(response)
    assert answer["issued_token_type"] == "urn:pulumi:token-type:access_token:organization"
    assert answer["token_type"] == "Bearer" and answer["scope"] == ""
    assert answer["expires_in"] == 1800  # the issuer's maximum, not the 7200 asked for

    minted = api.as_token(answer["access_token"])
    user = await body_json(await minted.call("GET", "/api/user"))
    assert user["githubLogin"] == f"{DEFAULT_ORG}-member"
    await minted.create_stack(f"{DEFAULT_ORG}/p/oidc-made")  # a member may create stacks
    await assert_error(await minted.call("DELETE", f"/api/stacks/{DEFAULT_ORG}/p/oidc-made"), 403)

    tokens = (await body_json(await api.call("GET", f"/api/orgs/{DEFAULT_ORG}/tokens")))["tokens"]
    mine = [t for t in tokens if t["name"].startswith("oidc-ci-")]
    assert len(mine) == 1 and 0 < mine[0]["expires"] - time.time() <= 1800
    assert mine[0]["description"] == "OIDC ci: repo:acme/infra:ref:refs/heads/main"
    audit = await body_json(
        await api.call("GET", f"/api/orgs/{DEFAULT_ORG}/auditlogs/v2", query={"pageSize": 50})
    )
    events = {(e["event"], e["user"]["githubLogin"]) for e in audit["auditLogEvents"]}
    assert ("token.create", "oidc:ci") in events
    assert ("oidc.issuer.create", "admin") in events and ("oidc.policy.update", "admin") in events


async def test_es256_keys_and_a_json_body_work_too(oidc_app: AppApi, issuer: OidcIssuer) -> None:
    _, api = oidc_app
    issuer.rotate("ES256")
    created = await register(api, issuer)
    await set_policies(api, created["id"], allow(role="viewer", maxExpiration=30))
    fields = {
        "audience": f"urn:pulumi:org:{DEFAULT_ORG}",
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "subject_token_type": "urn:ietf:params:oauth:token-type:id_token",
        "subject_token": issuer.token(github_claims()),
        "expiration": "60",
    }
    response = await api.call("POST", "/api/oauth/token", fields, headers={"Authorization": ""})
    assert response.status_code == 200, await response.get_data()
    assert (await body_json(response))["expires_in"] == 30  # the policy's maximum


def _unsigned(claims: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


async def test_every_bad_token_is_refused_and_mints_nothing(
    oidc_app: AppApi, issuer: OidcIssuer
) -> None:
    _, api = oidc_app
    created = await register(api, issuer)
    await set_policies(api, created["id"], allow(role="admin"))
    before = await token_count(api)
    now = int(time.time())
    base = {"iss": issuer.url, "aud": f"urn:pulumi:org:{DEFAULT_ORG}", "iat": now, "exp": now + 60}
    hmac = jwt.encode({**base, **github_claims()}, "shared-secret-of-32-bytes-or-more!", "HS256")
    cases = {
        "algorithm 'none'": _unsigned({**base, **github_claims()}),
        "algorithm 'HS256'": hmac,
        "signature does not verify": issuer.forge(github_claims()),
        "audience": issuer.token(github_claims(), audience="urn:pulumi:org:elsewhere"),
        "expired": issuer.token(github_claims(iat=now - 900, nbf=now - 900, exp=now - 600)),
        "not yet valid": issuer.token(github_claims(nbf=now + 600)),
        "no policy": issuer.token(github_claims(repository="evil/infra")),
        "no policy ": issuer.token(github_claims(ref="feature")),
        "not a JWT": "not.a.jwt",
    }
    for expected, token in cases.items():
        message = await refused(await exchange(api, token))
        assert expected.strip() in message, (expected, message)
    # A key the issuer never published, under a kid it never used.
    stranger = SigningKey.new()
    message = await refused(await exchange(api, issuer.token(github_claims(), key=stranger)))
    assert "has no key" in message
    # An ES256 token under the id of the issuer's RSA key.
    confused = SigningKey(issuer.keys[0].kid, "ES256", SigningKey.new("ES256").private)
    message = await refused(await exchange(api, issuer.token(github_claims(), key=confused)))
    assert "is not an ES256 key" in message
    assert await token_count(api) == before


async def test_tokens_for_another_org_or_an_untrusted_issuer_are_refused(
    oidc_app: AppApi, issuer: OidcIssuer
) -> None:
    _, api = oidc_app
    created = await register(api, issuer)
    await set_policies(api, created["id"], allow(role="admin"))
    # Asked for org "other", where this issuer is not registered.
    token = issuer.token(github_claims(), audience="urn:pulumi:org:other")
    assert "trusts no OIDC issuer" in await refused(await exchange(api, token, org="other"))
    with running_issuer() as stranger:
        message = await refused(await exchange(api, stranger.token(github_claims())))
        assert "trusts no OIDC issuer" in message


async def test_form_errors_use_oauth_codes(oidc_app: AppApi, issuer: OidcIssuer) -> None:
    _, api = oidc_app
    token = issuer.token(github_claims())
    await refused(await exchange(api, token, grant_type="password"), "unsupported_grant_type")
    await refused(await exchange(api, token, audience="acme"), "invalid_request")
    await refused(await exchange(api, token, scope="runner:x"), "invalid_scope")
    await refused(await exchange(api, token, expiration=0), "invalid_request")
    await refused(await exchange(api, ""), "invalid_request")
    await refused(
        await exchange(api, token, requested_token_type="urn:pulumi:token-type:access_token:team"),
        "invalid_request",
    )


async def test_deny_policies_and_personal_tokens(oidc_app: AppApi, issuer: OidcIssuer) -> None:
    test_app, api = oidc_app
    created = await register(api, issuer)
    await make_token(test_app, DEFAULT_ORG, Role.MEMBER, "alice")
    deny_forks: dict[str, Any] = {"decision": "deny", "tokenType": "personal", "userLogin": "alice"}
    deny_forks["rules"] = {"ref": "refs/heads/fork-*"}
    response = await set_policies(
        api, created["id"], deny_forks, allow("personal", userLogin="alice")
    )
    assert response.status_code == 200
    assert (await body_json(response))["version"] == 1

    fork = issuer.token(github_claims(ref="refs/heads/fork-1"))
    assert "deny" in await refused(await exchange(api, fork, scope="user:alice"))
    # Personal tokens only for the user a policy names, and who is a member.
    main = issuer.token(github_claims())
    assert "for user 'bob'" in await refused(await exchange(api, main, scope="user:bob"))
    response = await exchange(api, main, scope="user:alice")
    assert response.status_code == 200, await response.get_data()
    answer = await body_json(response)
    assert answer["issued_token_type"] == "urn:pulumi:token-type:access_token:personal"
    user = await body_json(await api.as_token(answer["access_token"]).call("GET", "/api/user"))
    assert user["githubLogin"] == "alice"
    listed = (await body_json(await api.call("GET", ISSUERS)))["oidcIssuers"]
    assert [i["name"] for i in listed] == ["ci"]

    await set_policies(api, created["id"], allow("personal", userLogin="carol"))
    message = await refused(await exchange(api, main, scope="user:carol"))
    assert "not a member" in message


async def test_key_rotation_refetches_keys_once(oidc_app: AppApi, issuer: OidcIssuer) -> None:
    test_app, api = oidc_app
    jwks = services_of(test_app).oidc.jwks
    now = [1000.0]
    jwks.clock = lambda: now[0]  # the cache's own clock, so "soon after" is exact
    created = await register(api, issuer)
    await set_policies(api, created["id"], allow(role="viewer"))
    old_key = issuer.keys[0]
    for _ in range(3):
        assert (await exchange(api, issuer.token(github_claims()))).status_code == 200
    assert issuer.jwks_fetches == 1  # cached

    issuer.rotate()
    now[0] += MIN_REFETCH_SECONDS
    response = await exchange(api, issuer.token(github_claims()))
    assert response.status_code == 200, await response.get_data()  # unknown kid: refetched
    assert issuer.jwks_fetches == 2
    old = issuer.token(github_claims(), key=old_key)
    assert "has no key" in await refused(await exchange(api, old))
    assert issuer.jwks_fetches == 2  # not again within MIN_REFETCH_SECONDS
    now[0] += 301  # PROCELLA_OIDC_JWKS_CACHE_SECONDS: stale, fetched again
    assert (await exchange(api, issuer.token(github_claims()))).status_code == 200
    assert issuer.jwks_fetches == 3


async def test_deleting_an_issuer_revokes_what_it_minted(
    oidc_app: AppApi, issuer: OidcIssuer
) -> None:
    _, api = oidc_app
    created = await register(api, issuer)
    await set_policies(api, created["id"], allow(role="member"))
    answer = await body_json(await exchange(api, issuer.token(github_claims())))
    minted = api.as_token(answer["access_token"])
    assert (await minted.call("GET", "/api/user")).status_code == 200

    assert (await api.call("DELETE", f"{ISSUERS}/{created['id']}")).status_code == 204
    await assert_error(await minted.call("GET", "/api/user"), 401)
    assert "trusts no OIDC issuer" in await refused(
        await exchange(api, issuer.token(github_claims()))
    )
    await assert_error(await api.call("GET", f"{ISSUERS}/{created['id']}"), 404)


async def test_emptying_the_policies_stops_new_exchanges(
    oidc_app: AppApi, issuer: OidcIssuer
) -> None:
    _, api = oidc_app
    created = await register(api, issuer)
    await set_policies(api, created["id"], allow(role="member"))
    assert (await exchange(api, issuer.token(github_claims()))).status_code == 200
    assert (await set_policies(api, created["id"])).status_code == 200
    assert "no policy" in await refused(await exchange(api, issuer.token(github_claims())))


async def test_registration_is_for_admins_and_checks_its_input(
    oidc_app: AppApi, issuer: OidcIssuer
) -> None:
    test_app, api = oidc_app
    member = Api(api.client, await make_token(test_app, DEFAULT_ORG, Role.MEMBER, "mo"))
    outsider = Api(api.client, await make_token(test_app, "elsewhere", Role.ADMIN, "eve"))
    body = {"name": "ci", "url": issuer.url}
    await assert_error(await member.call("POST", ISSUERS, body), 403)
    await assert_error(await outsider.call("POST", ISSUERS, body), 404)
    await assert_error(await outsider.call("GET", ISSUERS), 404)
    for bad in (
        {"name": "ci"},
        {"name": "bad name", "url": issuer.url},
        {"name": "ci", "url": "ftp://example.com"},
        {"name": "ci", "url": issuer.url + "?x=1"},
        {"name": "ci", "url": issuer.url, "maxExpiration": 0},
        {"name": "ci", "url": issuer.url, "maxExpiration": 10**9},
        {"name": "ci", "url": issuer.url, "audiences": [""]},
    ):
        await assert_error(await api.call("POST", ISSUERS, bad), 400)
    assert (await body_json(await api.call("GET", ISSUERS)))["oidcIssuers"] == []

    created = await register(api, issuer)
    await assert_error(await api.call("POST", ISSUERS, body), 409)
    path = f"{POLICIES}/{created['id']}"
    for bad_policies in (
        "x",
        [{"tokenType": "organization", "rules": {}}],
        [{"tokenType": "organization", "rules": {"sub": "*"}}],
        [{"tokenType": "robot", "rules": GITHUB_RULES}],
        [{"tokenType": "team", "rules": GITHUB_RULES}],
        [{"tokenType": "organization", "role": "owner", "rules": GITHUB_RULES}],
        [{"decision": "maybe", "tokenType": "organization", "rules": GITHUB_RULES}],
    ):
        await assert_error(await api.call("PATCH", path, {"policies": bad_policies}), 400)
    await assert_error(await member.call("PATCH", path, {"policies": [allow()]}), 403)
    stored = await body_json(await api.call("GET", path))
    assert stored["version"] == 0 and stored["policies"] == []

    ok = await api.call("PATCH", path, {"policies": [allow()], "version": 0})
    assert (await body_json(ok))["policies"] == [{**allow(), "role": "member"}]
    await assert_error(await api.call("PATCH", path, {"policies": [], "version": 0}), 409)


async def test_private_issuers_are_refused_by_default(api: Api) -> None:
    for url in ("http://127.0.0.1:80", "https://127.0.0.1", "https://10.0.0.1", "https://[::1]"):
        response = await api.call("POST", ISSUERS, {"name": "x", "url": url})
        message = await assert_error(response, 400)
        assert "PROCELLA_OIDC_ALLOW_PRIVATE_ISSUERS" in message, message
    # A name is checked on the addresses the connection would use.
    cache = JwksCache(ttl=60, allow_private=False)
    with pytest.raises(IssuerUnavailable, match=r"resolves to 127\.0\.0\.1"):
        await cache.keys("https://localhost:9")


async def test_team_tokens_act_as_the_team_and_go_with_their_issuer(
    oidc_app: AppApi, issuer: OidcIssuer
) -> None:
    _, api = oidc_app
    teams = f"/api/orgs/{DEFAULT_ORG}/teams"
    response = await api.call("POST", teams, {"name": "deployers", "description": "CI"})
    assert response.status_code in (200, 201), await response.get_data()
    created = await register(api, issuer)
    await set_policies(api, created["id"], allow("team", teamName="deployers"))

    token = issuer.token(github_claims())
    assert "for team 'ops'" in await refused(await exchange(api, token, scope="team:ops"))
    response = await exchange(api, token, scope="team:deployers")
    assert response.status_code == 200, await response.get_data()
    answer = await body_json(response)
    assert answer["issued_token_type"] == "urn:pulumi:token-type:access_token:team"
    assert answer["scope"] == "team:deployers"
    minted = api.as_token(answer["access_token"])
    user = await body_json(await minted.call("GET", "/api/user"))
    assert user["tokenInfo"]["team"] == "deployers", user

    # A policy naming a team that does not exist mints nothing.
    await set_policies(api, created["id"], allow("team", teamName="ghosts"))
    assert "not found" in await refused(await exchange(api, token, scope="team:ghosts"))

    assert (await api.call("DELETE", f"{ISSUERS}/{created['id']}")).status_code == 204
    await assert_error(await minted.call("GET", "/api/user"), 401)
