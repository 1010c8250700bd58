"""Trust policy rules over the claim shapes CI systems put in their ID tokens."""

from __future__ import annotations

from typing import Any

import pytest

from procella.auth import oidc
from procella.auth.models import Role
from procella.errors import BadRequest

GITHUB = {
    "iss": "https://token.actions.githubusercontent.com",
    "sub": "repo:acme/infra:environment:prod",
    "repository": "acme/infra",
    "repository_owner": "acme",
    "ref": "refs/heads/main",
    "environment": "prod",
    "workflow": "deploy",
}
GITLAB = {
    "iss": "https://gitlab.com",
    "sub": "project_path:acme/infra:ref_type:branch:ref:main",
    "project_path": "acme/infra",
    "namespace_path": "acme",
    "ref": "main",
    "ref_type": "branch",
    "ref_protected": True,
}
KUBERNETES = {
    "iss": "https://kubernetes.default.svc.cluster.local",
    "sub": "system:serviceaccount:deploy:pulumi",
    "kubernetes.io": {
        "namespace": "deploy",
        "serviceaccount": {"name": "pulumi", "uid": "0b6e"},
    },
}


def policy(rules: dict[str, str], **kw: Any) -> oidc.Policy:
    return oidc.parse_policies([{"tokenType": "organization", "rules": rules, **kw}])[0]


@pytest.mark.parametrize(
    ("claims", "rules", "expected"),
    [
        (GITHUB, {"sub": "repo:acme/infra:*"}, True),
        (GITHUB, {"repository": "acme/infra", "ref": "refs/heads/main"}, True),
        (GITHUB, {"repository": "acme/*", "environment": "prod"}, True),
        (GITHUB, {"repository": "acme/infra", "ref": "refs/heads/dev*"}, False),
        (GITHUB, {"repository": "ACME/infra"}, False),  # case matters
        (GITHUB, {"repository": "acme/infra", "job_workflow_ref": "*"}, False),  # absent claim
        (GITLAB, {"project_path": "acme/infra", "ref_protected": "true"}, True),
        (GITLAB, {"sub": "project_path:acme/*:ref_type:branch:ref:main"}, True),
        (GITLAB, {"namespace_path": "other"}, False),
        (KUBERNETES, {"sub": "system:serviceaccount:deploy:*"}, True),
        (KUBERNETES, {"kubernetes.io.namespace": "deploy"}, True),
        (KUBERNETES, {"kubernetes.io.serviceaccount.name": "pulumi"}, True),
        (KUBERNETES, {"kubernetes.io.serviceaccount.name": "other"}, False),
        (KUBERNETES, {"kubernetes.io": "deploy"}, False),  # an object matches no pattern
        ({"sub": "x", "groups": ["dev", "ops"]}, {"groups": "ops"}, True),
        ({"sub": "x", "groups": ["dev"]}, {"groups": "ops"}, False),
    ],
)
def test_rules_match_ci_claim_shapes(
    claims: dict[str, Any], rules: dict[str, str], expected: bool
) -> None:
    assert policy(rules).matches(claims) is expected


def test_the_first_covering_matching_policy_decides() -> None:
    policies = oidc.parse_policies(
        [
            {"decision": "deny", "tokenType": "organization", "rules": {"ref": "refs/heads/x*"}},
            {"tokenType": "organization", "role": "admin", "rules": {"repository": "acme/*"}},
            {"tokenType": "team", "teamName": "ops", "rules": {"repository": "acme/*"}},
        ]
    )
    chosen = oidc.choose(policies, "organization", "", "", GITHUB)
    assert chosen.role is Role.ADMIN
    assert oidc.choose(policies, "team", "ops", "", GITHUB).team == "ops"
    with pytest.raises(oidc.ExchangeError, match="deny"):
        oidc.choose(policies, "organization", "", "", {**GITHUB, "ref": "refs/heads/xyz"})
    with pytest.raises(oidc.ExchangeError, match="for team 'dev'"):
        oidc.choose(policies, "team", "dev", "", GITHUB)
    with pytest.raises(oidc.ExchangeError, match="personal"):
        oidc.choose(policies, "personal", "", "alice", GITHUB)


def test_policies_round_trip_through_their_json() -> None:
    raw = [
        {"decision": "allow", "tokenType": "organization", "role": "viewer", "rules": {"a": "b"}},
        {"decision": "deny", "tokenType": "personal", "userLogin": "al", "rules": {"a": "b"}},
        {"decision": "allow", "tokenType": "team", "teamName": "ops", "rules": {"a": "b"}},
        {
            "decision": "allow",
            "tokenType": "organization",
            "role": "admin",
            "rules": {"a": "b"},
            "maxExpiration": 600,
        },
    ]
    parsed = oidc.parse_policies(raw)
    assert [p.to_json() for p in parsed] == raw
    assert oidc.parse_policies([p.to_json() for p in parsed]) == parsed


@pytest.mark.parametrize(
    "bad",
    [
        {"tokenType": "organization", "rules": {"sub": "*"}},  # trusts everything
        {"tokenType": "organization", "rules": {"sub": "?*"}},
        {"tokenType": "organization", "rules": {}},
        {"tokenType": "organization", "rules": {"sub": 1}},
        {"tokenType": "personal", "rules": {"sub": "x"}},  # whom?
        {"tokenType": "organization", "rules": {"sub": "x"}, "maxExpiration": 0},
        {"tokenType": "organization", "rules": {"sub": "x"}, "maxExpiration": "1h"},
    ],
)
def test_policies_that_trust_too_much_or_say_too_little_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(BadRequest):
        oidc.parse_policies([bad])


def test_granted_seconds_stay_within_both_maximums() -> None:
    assert oidc.granted_seconds(7200, 3600, 86400) == 3600
    assert oidc.granted_seconds(600, 3600, 86400) == 600
    assert oidc.granted_seconds(7200, 86400, 1800) == 1800
    assert oidc.granted_seconds(7200, 900, 3600, 86400) == 900  # the policy's own maximum
    assert oidc.granted_seconds(7200, None, 3600, 86400) == 3600
