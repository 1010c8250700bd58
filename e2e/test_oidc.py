"""`pulumi login --oidc-token`: a CI job's ID token from a real issuer
(procella_testing/oidc_issuer.py, on 127.0.0.1) exchanged for a Procella token, then
`pulumi up` with it; and every refusal shown by the CLI with the server's reason."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from names import Names

from procella_testing.cluster import Cluster
from procella_testing.oidc_issuer import OidcIssuer, SigningKey, running_issuer
from procella_testing.procella_server import (
    AUTH_CACHE_SECONDS,
    OIDC_JWKS_CACHE_SECONDS,
    ProcellaServer,
)
from procella_testing.processes import Result, expect_fail
from procella_testing.pulumi_cli import PulumiCLI, Stack, make_project

# The subject is OIDC login, not how the CLI sends the state: one mode (conftest).
pytestmark = pytest.mark.any_mode

CLAIMS = {
    "sub": "repo:acme/infra:ref:refs/heads/main",
    "repository": "acme/infra",
    "ref": "refs/heads/main",
}


@pytest.fixture
def issuer() -> Iterator[OidcIssuer]:
    with running_issuer() as running:
        yield running


def trust(server: ProcellaServer | Cluster, org: str, issuer: OidcIssuer, **policy: Any) -> str:
    """Register ``issuer`` in ``org`` with one allow policy; the issuer's id."""
    status, created = server.api(
        "POST", f"/api/orgs/{org}/oidc/issuers", body={"name": "ci", "url": issuer.url}
    )
    assert status == 201, created
    rule = {
        "decision": "allow",
        "tokenType": "organization",
        "role": "member",
        "rules": {"repository": "acme/infra", "ref": "refs/heads/*"},
        **policy,
    }
    rule = {key: value for key, value in rule.items() if value is not None}
    status, body = server.api(
        "PATCH",
        f"/api/orgs/{org}/auth/policies/oidcissuers/{created['id']}",
        body={"policies": [rule]},
    )
    assert status == 200, body
    return str(created["id"])


def oidc_login(cli: PulumiCLI, org: str, token: str, *flags: str) -> Result:
    return cli.run("login", cli.backend_url, "--oidc-token", token, "--oidc-org", org, *flags)


def refused(result: Result, reason: str) -> None:
    """The login failed, and the CLI shows the server's reason."""
    expect_fail(result, "OIDC token exchange failed", reason)


@pytest.fixture
def ci(pulumi: PulumiCLI, tmp_path: Path) -> Iterator[PulumiCLI]:
    """A CI job's CLI: no access token at all, its own PULUMI_HOME."""
    cli = pulumi.with_token("", tmp_path / "ci-home")
    cli.token = None
    yield cli
    cli.close()


def test_a_ci_job_logs_in_with_its_id_token_and_updates(
    ci: PulumiCLI,
    server: ProcellaServer | Cluster,
    names: Names,
    issuer: OidcIssuer,
    tmp_path: Path,
) -> None:
    trust(server, names.org, issuer)
    login = oidc_login(
        ci,
        names.org,
        issuer.token(CLAIMS, audience=f"urn:pulumi:org:{names.org}"),
        "--oidc-expiration",
        "30m",
    )
    assert login.rc == 0, login.describe()
    assert f"as {names.org}-member" in login.output, login.describe()
    whoami = ci.ok("whoami", "-v").output
    assert f"User: {names.org}-member" in whoami, whoami
    assert names.org in whoami

    stack = Stack(ci, names.stack(), make_project("things", names.project, tmp_path / "p")).init()
    assert stack.up()["create"] > 0
    assert stack.resources()

    # The minted token is listed with its 30-minute expiry and the subject it came from.
    status, listed = server.api("GET", f"/api/orgs/{names.org}/tokens")
    assert status == 200
    minted = [t for t in listed["tokens"] if t["name"].startswith("oidc-ci-")]
    assert len(minted) == 1, listed
    assert 25 * 60 < minted[0]["expires"] - time.time() <= 30 * 60
    assert CLAIMS["sub"] in minted[0]["description"]


def test_bad_id_tokens_are_refused_with_the_reason(
    ci: PulumiCLI, server: ProcellaServer | Cluster, names: Names, issuer: OidcIssuer
) -> None:
    trust(server, names.org, issuer)
    audience = f"urn:pulumi:org:{names.org}"
    now = int(time.time())
    cases = {
        "signature does not verify": issuer.forge(CLAIMS, audience=audience),
        "audience": issuer.token(CLAIMS, audience="sts.amazonaws.com"),
        "expired": issuer.token(
            {**CLAIMS, "iat": now - 900, "nbf": now - 900, "exp": now - 600}, audience=audience
        ),
        "no policy": issuer.token({**CLAIMS, "repository": "evil/infra"}, audience=audience),
    }
    for reason, token in cases.items():
        refused(oidc_login(ci, names.org, token), reason)
    expect_fail(ci.run("stack", "ls", "--all"))  # never logged in


def test_key_rotation_and_revocation(
    ci: PulumiCLI, server: ProcellaServer | Cluster, names: Names, issuer: OidcIssuer
) -> None:
    issuer_id = trust(server, names.org, issuer)
    audience = f"urn:pulumi:org:{names.org}"
    old_key = issuer.keys[0]
    assert oidc_login(ci, names.org, issuer.token(CLAIMS, audience=audience)).rc == 0

    # The issuer rotates its key: a token signed with the new one works at once (the
    # server fetches the keys again for a key id it does not know) ...
    issuer.rotate("ES256")
    time.sleep(1.1)  # procella.auth.jwks.MIN_REFETCH_SECONDS
    rotated = oidc_login(ci, names.org, issuer.token(CLAIMS, audience=audience))
    assert rotated.rc == 0, rotated.describe()
    # ... and one signed with the retired key no longer does, on any replica, once none
    # still holds the old key set (another replica may, for PROCELLA_OIDC_JWKS_CACHE_SECONDS).
    time.sleep(OIDC_JWKS_CACHE_SECONDS + 1)
    for _ in range(2):  # likely another replica the second time
        refused(
            oidc_login(ci, names.org, issuer.token(CLAIMS, audience=audience, key=old_key)),
            "has no key",
        )
    stranger = SigningKey.new()
    refused(
        oidc_login(ci, names.org, issuer.token(CLAIMS, audience=audience, key=stranger)),
        "has no key",
    )

    # The policy is revoked (emptied): no new exchange; the tokens minted still work ...
    status, _ = server.api(
        "PATCH",
        f"/api/orgs/{names.org}/auth/policies/oidcissuers/{issuer_id}",
        body={"policies": []},
    )
    assert status == 200
    refused(oidc_login(ci, names.org, issuer.token(CLAIMS, audience=audience)), "no policy")
    ci.ok("stack", "ls", "--all")  # a call to the server (whoami answers from its cache)
    # ... until the issuer is deleted, which revokes them.
    status, _ = server.api("DELETE", f"/api/orgs/{names.org}/oidc/issuers/{issuer_id}")
    assert status == 204
    # Other replicas may have the token cached: PROCELLA_AUTH_CACHE_SECONDS at most.
    time.sleep(AUTH_CACHE_SECONDS + 1)
    expect_fail(ci.run("stack", "ls", "--all"), "logging in")
    expect_fail(ci.run("stack", "ls", "--all"), "logging in")  # likely another replica
    refused(
        oidc_login(ci, names.org, issuer.token(CLAIMS, audience=audience)), "trusts no OIDC issuer"
    )


def test_a_ci_job_logs_in_as_a_team(
    ci: PulumiCLI,
    server: ProcellaServer | Cluster,
    names: Names,
    issuer: OidcIssuer,
    tmp_path: Path,
) -> None:
    trust(server, names.org, issuer, tokenType="team", teamName="deployers", role=None)
    team = ["--org", names.org, "--team", "deployers"]  # the org exists now
    server.admin_command("team", "create", *team)
    server.admin_command(
        "team", "grant", *team, "--project", names.project, "--permission", "write"
    )
    token = issuer.token(CLAIMS, audience=f"urn:pulumi:org:{names.org}")
    login = oidc_login(ci, names.org, token, "--oidc-team", "deployers")
    assert login.rc == 0, login.describe()
    whoami = ci.ok("whoami", "-v").stdout
    assert "Token type: team: deployers" in whoami, whoami

    stack = Stack(ci, names.stack(), make_project("things", names.project, tmp_path / "p")).init()
    assert stack.up()["create"] > 0
    refused(oidc_login(ci, names.org, token, "--oidc-team", "ops"), "for team 'ops'")
