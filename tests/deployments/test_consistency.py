"""Every bundle against procella.settings and against each other."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from . import consistency, render

BUNDLES = ["compose", "k8s", "ecs", "swarm"]
REQUIRED = ["PROCELLA_DATABASE_URL", "PROCELLA_ENCRYPTION_KEY", "PROCELLA_BLOB_S3_BUCKET"]
SECTIONS = ["## What it starts", "## Required settings", "## Scaling", "## Production notes"]


def test_every_procella_name_is_a_setting(repo: Path) -> None:
    assert consistency.unknown_setting_names(repo) == []


def test_unknown_name_in_a_broken_copy_is_reported(copy: Path, edit) -> None:
    edit(
        render.compose_file(copy),
        "PROCELLA_BLOB_BACKEND: s3\n",
        "PROCELLA_BLOB_BACKEND: s3\n    PROCELLA_BLOB_S3_BUKET: procella\n",
    )
    (problem,) = consistency.unknown_setting_names(copy)
    assert "compose.yaml" in problem and "PROCELLA_BLOB_S3_BUKET" in problem


def test_secret_settings_never_have_literal_values(repo: Path) -> None:
    assert consistency.secrets_in_plain_values(repo) == []


def test_a_literal_secret_in_a_broken_copy_is_reported(copy: Path, edit) -> None:
    edit(
        render.swarm_file(copy),
        "PROCELLA_BLOB_BACKEND: s3\n",
        "PROCELLA_BLOB_BACKEND: s3\n      PROCELLA_ENCRYPTION_KEY: " + "0" * 64 + "\n",
    )
    problems = consistency.secrets_in_plain_values(copy)
    assert any("swarm" in p and "PROCELLA_ENCRYPTION_KEY" in p for p in problems), problems


def test_ports_health_paths_and_timing_agree(repo: Path) -> None:
    assert consistency.port_path_and_timing_problems(repo) == []


@pytest.mark.parametrize(
    ("path", "old", "new", "check", "expected"),
    [
        (
            "deployments/ecs/target-group.json",
            '"HealthCheckPath": "/healthz"',
            '"HealthCheckPath": "/health"',
            consistency.ecs_problems,
            "target group",
        ),
        (
            "deployments/ecs/load-balancer-attributes.json",
            '"Value": "300"',
            '"Value": "60"',
            consistency.ecs_problems,
            "idle timeout",
        ),
        (
            "deployments/swarm/stack.yaml",
            "127.0.0.1:9090/healthz",
            "127.0.0.1:8080/healthz",
            consistency.swarm_problems,
            ":8080/healthz",
        ),
        (
            "deployments/k8s/base/deployment.yaml",
            "terminationGracePeriodSeconds: 45",
            "terminationGracePeriodSeconds: 30",
            consistency.k8s_problems,
            "terminationGracePeriodSeconds 30",
        ),
        (
            "deployments/k8s/base/deployment.yaml",
            "path: /readyz",
            "path: /healthz",
            consistency.k8s_problems,
            "readinessProbe",
        ),
        (
            "deployments/compose/compose.yaml",
            "stop_grace_period: 45s",
            "stop_grace_period: 10s",
            consistency.compose_problems,
            "stop_grace_period",
        ),
        (
            "deployments/compose/compose.yaml",
            "procella-3:9090",
            "procella-3:9091",
            consistency.compose_problems,
            "CADDY_UPSTREAMS",
        ),
        (
            "deployments/Dockerfile",
            "EXPOSE 9090",
            "EXPOSE 8080",
            consistency.dockerfile_problems,
            "EXPOSE",
        ),
        (
            "Caddyfile",
            "read_timeout 300s",
            "read_timeout 60s",
            consistency.caddy_problems,
            "read_timeout",
        ),
    ],
)
def test_a_disagreement_in_a_broken_copy_is_reported(
    copy: Path, edit, path: str, old: str, new: str, check, expected: str
) -> None:
    edit(copy / path, old, new)
    problems = check(copy)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize("bundle", BUNDLES)
def test_each_bundle_has_a_readme_with_the_required_settings(repo: Path, bundle: str) -> None:
    text = (repo / "deployments" / bundle / "README.md").read_text()
    for heading in SECTIONS:
        assert heading in text, f"{bundle}/README.md lacks {heading!r}"
    for name in REQUIRED:
        # Directly or as its *_FILE variant.
        assert re.search(rf"\b{name}(_FILE)?\b", text), f"{bundle}/README.md never names {name}"
    for note in ("PgBouncer", "bucket must exist"):
        assert note in text, f"{bundle}/README.md lacks the production note on {note!r}"
