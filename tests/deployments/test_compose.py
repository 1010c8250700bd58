"""deployments/compose: `docker compose config -q` for both profiles, and what they start."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from . import render, tools

DEV = {"postgres", "minio", "bucket", "migrate", "procella"}
CLUSTER = {"postgres", "minio", "bucket", "migrate", "procella-1", "procella-2", "procella-3"}
CLUSTER |= {"caddy", "prometheus"}
ONE_SHOT = {"bucket", "migrate"}
REPLICAS = {"procella", "procella-1", "procella-2", "procella-3"}


def _services(repo: Path, profile: str) -> dict[str, Any]:
    services: dict[str, Any] = render.compose_model(repo, profile)["services"]
    return services


@pytest.mark.parametrize("profile", render.COMPOSE_PROFILES)
def test_compose_config_accepts_the_profile(repo: Path, profile: str) -> None:
    tools.expect_ok(render.compose(repo, profile, "config", "-q"))


@pytest.mark.parametrize("profile", render.COMPOSE_PROFILES)
def test_compose_config_rejects_a_broken_copy(copy: Path, edit, profile: str) -> None:
    edit(
        render.compose_file(copy),
        "  postgres:\n    profiles: [dev, cluster]\n",
        "  postgres:\n    profiles: [dev, cluster]\n    stop_grace: 45s\n",
    )
    proc = render.compose(copy, profile, "config", "-q")
    assert proc.returncode != 0
    assert "stop_grace" in proc.stderr, proc.stderr


def test_profiles_start_the_documented_services(repo: Path) -> None:
    assert set(_services(repo, "dev")) == DEV
    assert set(_services(repo, "cluster")) == CLUSTER


@pytest.mark.parametrize("profile", render.COMPOSE_PROFILES)
def test_long_running_services_have_healthchecks(repo: Path, profile: str) -> None:
    for name, service in _services(repo, profile).items():
        if name in ONE_SHOT:
            assert service["restart"] == "no", name
            continue
        check = service.get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"


@pytest.mark.parametrize("profile", render.COMPOSE_PROFILES)
def test_start_order_uses_conditions(repo: Path, profile: str) -> None:
    services = _services(repo, profile)
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    # `procella migrate` checks the bucket too: started beside the bucket job, it raced it.
    done = "service_completed_successfully"
    assert services["migrate"]["depends_on"]["bucket"]["condition"] == done
    assert services["bucket"]["depends_on"]["minio"]["condition"] == "service_healthy"
    for name in REPLICAS & set(services):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully", name
        assert deps["bucket"]["condition"] == "service_completed_successfully", name
        # The migrate service ran the schema; replicas must not race to do it again.
        assert services[name]["environment"]["PROCELLA_MIGRATE_ON_START"] == "false"


def test_caddy_fronts_healthy_replicas_with_the_repository_caddyfile(repo: Path) -> None:
    caddy = _services(repo, "cluster")["caddy"]
    for replica in ("procella-1", "procella-2", "procella-3"):
        assert caddy["depends_on"][replica]["condition"] == "service_healthy"
    mounts = {v["target"]: v for v in caddy["volumes"]}
    assert Path(mounts["/etc/caddy/Caddyfile"]["source"]) == render.caddyfile(repo)


@pytest.mark.parametrize("profile", render.COMPOSE_PROFILES)
def test_secrets_are_mounted_files(repo: Path, profile: str) -> None:
    model = render.compose_model(repo, profile)
    for name, service in model["services"].items():
        mounted = {s["target"] for s in service.get("secrets", [])}
        for variable, value in (service.get("environment") or {}).items():
            if variable.endswith("_FILE"):
                assert str(value) in mounted, f"{name}: {variable}={value} is not a mounted secret"
    for name, secret in model["secrets"].items():
        assert "file" in secret, f"secret {name} must come from a file"


def test_state_lives_in_named_volumes(repo: Path) -> None:
    model = render.compose_model(repo, "cluster")
    for name in ("postgres", "minio", "caddy", "prometheus"):
        kinds = {v["type"] for v in model["services"][name]["volumes"]}
        assert "volume" in kinds, f"{name} keeps its state in no named volume"


def test_gen_secrets_writes_every_declared_secret_once(copy: Path) -> None:
    script = copy / "deployments" / "compose" / "gen-secrets.sh"
    sh = shutil.which("sh")
    assert sh
    subprocess.run([sh, script], check=True, capture_output=True)
    secrets = copy / "deployments" / "compose" / "secrets"
    first = {p.name: p.read_text() for p in secrets.iterdir()}
    declared = render.compose_model(copy, "cluster")["secrets"]
    assert set(first) == set(declared)
    assert re.fullmatch(r"[0-9a-f]{64}", first["encryption_key"])
    assert f":{first['postgres_password']}@" in first["database_url"]
    assert first["s3_secret_key"] in first["s3_credentials"]
    # A second run keeps every file: a new encryption key would orphan stored secrets.
    subprocess.run([sh, script], check=True, capture_output=True)
    assert {p.name: p.read_text() for p in secrets.iterdir()} == first
