"""Tests that build and start containers (``nox -s image``, ``nox -s compose``).

They need a Docker engine; without one they fail with the reason, never skip. Every
container they start is removed by the test that started it, also when it fails.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

import pytest

from procella_testing import images


@pytest.fixture(scope="session")
def engine() -> None:
    problem = images.engine_available()
    if problem:
        pytest.fail(f"these tests need a Docker engine: {problem}", pytrace=False)


@pytest.fixture(scope="session")
def image(engine: None) -> str:
    """The project's image, built from deployments/Dockerfile (a cache hit after
    `python -m procella_testing.images procella`, which nox runs first and times)."""
    with images.build_lock():
        return images.ensure_procella()


def docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def expect_ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"$ {' '.join(proc.args)}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def run_in(image: str, command: Sequence[str], *, entrypoint: str | None = None) -> str:
    """A throwaway container without a network: its output, failing on a non-zero exit."""
    args = ["run", "--rm", "--network", "none"]
    if entrypoint is not None:
        args += ["--entrypoint", entrypoint]
    return expect_ok(docker(*args, image, *command))
