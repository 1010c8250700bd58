"""deployments/swarm: `docker stack config` (the v3 swarm schema), and the rollout settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import render, tools


def _server(repo: Path) -> dict[str, Any]:
    service: dict[str, Any] = render.swarm_model(repo)["services"]["procella"]
    return service


def test_docker_stack_config_accepts_the_stack(repo: Path) -> None:
    tools.expect_ok(render.swarm(repo))


def test_docker_stack_config_rejects_a_broken_copy(copy: Path, edit) -> None:
    edit(render.swarm_file(copy), "      replicas: 3\n", "      replica: 3\n")
    proc = render.swarm(copy)
    assert proc.returncode != 0
    assert "replica" in proc.stderr, proc.stderr


def test_three_replicas_with_rolling_update_and_rollback(repo: Path) -> None:
    deploy = _server(repo)["deploy"]
    assert deploy["replicas"] == 3
    assert deploy["update_config"]["failure_action"] == "rollback"
    assert deploy["update_config"]["order"] == "start-first"
    assert deploy["update_config"]["parallelism"] == 1
    assert deploy["rollback_config"]["parallelism"] == 1
    assert deploy["restart_policy"]["condition"] == "any"


def test_healthcheck_and_external_secrets(repo: Path) -> None:
    server = _server(repo)
    assert server["healthcheck"]["test"][0] == "CMD"
    mounted = {f"/run/secrets/{s['source']}" for s in server["secrets"]}
    for variable, value in server["environment"].items():
        if variable.endswith("_FILE"):
            assert value in mounted, f"{variable}={value} is not a mounted secret"
    for name, secret in render.swarm_model(repo)["secrets"].items():
        assert secret.get("external") is True, f"secret {name} must be created outside the file"
