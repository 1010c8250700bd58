"""Each bundle as its own tool reads it: validator runs and the normalized models they print.

Every function takes the root of a checkout (the repository, or a broken copy of it in a temp
dir), so the same code checks the real bundles and proves it rejects damaged ones. The parsed
models are cached per root: tests that only read a model share one tool run.
"""

from __future__ import annotations

import functools
import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

from . import tools

Proc = subprocess.CompletedProcess[str]

COMPOSE_PROFILES = ("dev", "cluster")
K8S_TARGETS = ("base", "overlays/production")
# The oldest Kubernetes the bundle claims to support, and the newest the validator knows.
K8S_VERSIONS = ("1.30", "1.37")


def compose_file(root: Path) -> Path:
    return root / "deployments" / "compose" / "compose.yaml"


def swarm_file(root: Path) -> Path:
    return root / "deployments" / "swarm" / "stack.yaml"


def k8s_dir(root: Path, target: str) -> Path:
    return root / "deployments" / "k8s" / target


def ecs_dir(root: Path) -> Path:
    return root / "deployments" / "ecs"


def dockerfile(root: Path) -> Path:
    return root / "deployments" / "Dockerfile"


def caddyfile(root: Path) -> Path:
    return root / "Caddyfile"


# compose ---------------------------------------------------------------------------------


def compose(root: Path, profile: str, *args: str) -> Proc:
    return tools.run(
        [tools.docker_compose(), "-f", compose_file(root), "--profile", profile, *args]
    )


@functools.cache
def compose_model(root: Path, profile: str) -> dict[str, Any]:
    out = tools.expect_ok(compose(root, profile, "config", "--format", "json"))
    model: dict[str, Any] = json.loads(out)
    return model


# swarm -----------------------------------------------------------------------------------


def swarm(root: Path) -> Proc:
    return tools.run([tools.docker(), "stack", "config", "-c", swarm_file(root)])


@functools.cache
def swarm_model(root: Path) -> dict[str, Any]:
    model: dict[str, Any] = yaml.safe_load(tools.expect_ok(swarm(root)))
    return model


# kubernetes ------------------------------------------------------------------------------


def kustomize_build(root: Path, target: str) -> Proc:
    return tools.run([tools.kustomize(), "build", k8s_dir(root, target)])


@functools.cache
def k8s_docs(root: Path, target: str) -> tuple[dict[str, Any], ...]:
    rendered = tools.expect_ok(kustomize_build(root, target))
    return tuple(doc for doc in yaml.safe_load_all(rendered) if doc)


def kubernetes_validate(rendered: str, version: str) -> Proc:
    with tempfile.TemporaryDirectory() as scratch:
        manifest = Path(scratch) / "rendered.yaml"
        manifest.write_text(rendered)
        return tools.run([tools.kubernetes_validate(), "--strict", "-k", version, manifest])


# caddy -----------------------------------------------------------------------------------


def caddy(root: Path, command: str, env: dict[str, str]) -> Proc:
    """`caddy validate` or `caddy adapt` with only ``env`` set among CADDY_* variables."""
    with tempfile.TemporaryDirectory() as scratch:
        # Caddy writes autosave and certificate state under XDG dirs: keep it out of $HOME.
        run_env = tools.clean_env(XDG_CONFIG_HOME=scratch, XDG_DATA_HOME=scratch, **env)
        return tools.run(
            [tools.caddy(), command, "--config", caddyfile(root), "--adapter", "caddyfile"],
            env=run_env,
        )


@functools.cache
def caddy_model(root: Path, env: tuple[tuple[str, str], ...] = ()) -> dict[str, Any]:
    model: dict[str, Any] = json.loads(tools.expect_ok(caddy(root, "adapt", dict(env))))
    return model


def caddy_env_from_compose(root: Path) -> dict[str, str]:
    """The CADDY_* variables the compose cluster profile gives its Caddy service."""
    service = compose_model(root, "cluster")["services"]["caddy"]
    return {k: str(v) for k, v in service.get("environment", {}).items() if k.startswith("CADDY_")}


def reverse_proxies(model: dict[str, Any]) -> list[tuple[list[Any] | None, dict[str, Any]]]:
    """The reverse_proxy handlers of an adapted Caddyfile, however deeply nested, in order,
    each with the matchers of its route (None: every request)."""
    found: list[tuple[list[Any] | None, dict[str, Any]]] = []

    def walk(routes: list[dict[str, Any]]) -> None:
        for route in routes:
            for handler in route.get("handle", []):
                if handler.get("handler") == "reverse_proxy":
                    found.append((route.get("match"), handler))
                walk(handler.get("routes", []))

    for server in model["apps"]["http"]["servers"].values():
        walk(server.get("routes", []))
    return found


def reverse_proxy(model: dict[str, Any]) -> dict[str, Any]:
    """The reverse_proxy handler that takes every request no other route matched."""
    catch_all = [handler for match, handler in reverse_proxies(model) if match is None]
    assert len(catch_all) == 1, f"expected one catch-all reverse_proxy, found {len(catch_all)}"
    return catch_all[0]


# dockerfile ------------------------------------------------------------------------------


def hadolint(root: Path) -> Proc:
    # Default failure threshold: every finding, even "info", fails the check.
    return tools.run([tools.hadolint(), "--no-color", dockerfile(root)], cwd=root)


# ecs -------------------------------------------------------------------------------------


def ecs_json(root: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((ecs_dir(root) / name).read_text())
    return data
