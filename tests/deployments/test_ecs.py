"""deployments/ecs: request bodies checked against botocore's ECS and ELBv2 input shapes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from . import aws, render


def _problems(root: Path, name: str) -> list[str]:
    service, operation = aws.INPUTS[name]
    return aws.problems(service, operation, render.ecs_json(root, name))


def _rewrite(root: Path, name: str, change: dict[str, Any]) -> None:
    path = render.ecs_dir(root) / name
    data = json.loads(path.read_text())
    data.update(change)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("name", sorted(aws.INPUTS))
def test_matches_the_api_input_shape(repo: Path, name: str) -> None:
    assert _problems(repo, name) == []


def test_every_json_file_is_checked(repo: Path) -> None:
    assert {p.name for p in render.ecs_dir(repo).glob("*.json")} == set(aws.INPUTS)


@pytest.mark.parametrize(
    ("name", "change", "expected"),
    [
        ("task-definition.json", {"healthcheck": {}}, 'Unknown parameter in input: "healthcheck"'),
        ("task-definition.json", {"networkMode": "bridged"}, "'bridged' is not one of"),
        ("service.json", {"desiredCount": "3"}, "Invalid type for parameter desiredCount"),
        ("service.json", {"launchType": "fargate"}, "'fargate' is not one of"),
        ("target-group.json", {"TargetType": "pod"}, "'pod' is not one of"),
    ],
)
def test_rejects_a_broken_copy(copy: Path, name: str, change: dict[str, Any], expected: str):
    _rewrite(copy, name, change)
    found = "\n".join(_problems(copy, name))
    assert expected in found, found


def test_task_is_a_hardened_fargate_task(repo: Path) -> None:
    task = render.ecs_json(repo, "task-definition.json")
    assert task["requiresCompatibilities"] == ["FARGATE"]
    assert task["networkMode"] == "awsvpc"
    (container,) = task["containerDefinitions"]
    assert container["readonlyRootFilesystem"] is True
    assert not container["user"].startswith("0")
    assert container["logConfiguration"]["logDriver"] == "awslogs"
    # Fargate caps stopTimeout at 120 s.
    assert container["stopTimeout"] <= 120
    for secret in container["secrets"]:
        assert secret["valueFrom"].startswith(("arn:aws:secretsmanager:", "arn:aws:ssm:"))


def test_service_runs_three_tasks_behind_the_target_group(repo: Path) -> None:
    task = render.ecs_json(repo, "task-definition.json")
    service = render.ecs_json(repo, "service.json")
    assert service["desiredCount"] == 3
    assert service["launchType"] == "FARGATE"
    assert service["taskDefinition"] == task["family"]
    breaker = service["deploymentConfiguration"]["deploymentCircuitBreaker"]
    assert breaker == {"enable": True, "rollback": True}
    names = {c["name"] for c in task["containerDefinitions"]}
    assert {lb["containerName"] for lb in service["loadBalancers"]} <= names
    # awsvpc tasks register by IP address, never by instance.
    assert render.ecs_json(repo, "target-group.json")["TargetType"] == "ip"
