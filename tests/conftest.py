"""Shared fixtures: settings for a fresh, isolated deployment, and the app under test.

``PROCELLA_TEST_BACKEND`` picks the configuration the API tests run on:
``embedded`` (default: SQLite + local files) or ``cluster`` (PostgreSQL + S3, each test
with its own database and bucket). The contract suites run every backend regardless.

The app fixture runs the app's lifespan (``test_app``), so stores really open, migrate
and close, exactly as under hypercorn.

Hypothesis (``tests/property``) runs under a settings profile: ``ci`` when the ``CI``
environment variable is set (derandomized, so a CI run is reproducible, and printing the
blob that replays a failure), ``dev`` otherwise; ``HYPOTHESIS_PROFILE`` picks one by name
(``thorough`` searches ten times longer, for a local hunt). Both default profiles bound
the examples, so the property suite stays well under a minute in every run.

Tests that need a server are marked by what they use (``pytest_collection_modifyitems``), so
``pytest -m "not postgres and not s3"`` runs with no server binaries and a new test is marked
as it is written: the ``pg_admin_url`` fixture (and those built on it: ``pg_url``,
``cluster_settings``) marks ``postgres``, ``s3_endpoint`` marks ``s3``, and ``settings``
marks both under ``PROCELLA_TEST_BACKEND=cluster``. A fixture that picks a backend by its
parameter marks that parameter (``pytest.param("postgres", marks=pytest.mark.postgres)``).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import hypothesis
import pytest
from quart import Quart
from quart.testing import TestApp
from quart.typing import TestAppProtocol, TestClientProtocol

from procella import create_app
from procella.settings import Settings
from procella_testing import servers

ADMIN_TOKEN = "pul-" + "a" * 40
BACKEND = os.environ.get("PROCELLA_TEST_BACKEND", "embedded")
if BACKEND not in ("embedded", "cluster"):
    raise RuntimeError(f"PROCELLA_TEST_BACKEND must be embedded or cluster, not {BACKEND!r}")

# deadline=None: timings on a loaded CI machine are no property of the code.
hypothesis.settings.register_profile("dev", max_examples=60, deadline=None)
hypothesis.settings.register_profile(
    "ci", max_examples=60, deadline=None, derandomize=True, database=None, print_blob=True
)
hypothesis.settings.register_profile("thorough", max_examples=600, deadline=None)
hypothesis.settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)


class _PatientTestApp(TestApp):
    """Quart's test app waits 6 s for the app to start or stop (migrations, the blob
    store, the first GC cycle); on a loaded CI machine that has run out."""

    def __init__(self, app: Quart, startup_timeout: int = 60, shutdown_timeout: int = 60) -> None:
        super().__init__(app, startup_timeout, shutdown_timeout)


Quart.test_app_class = _PatientTestApp

# Fixture -> the markers of the servers it starts (directly or through the fixtures it uses).
SERVER_MARKERS = {
    "pg_admin_url": ("postgres",),
    "s3_endpoint": ("s3",),
    **({"settings": ("postgres", "s3")} if BACKEND == "cluster" else {}),
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        used = getattr(item, "fixturenames", ())
        for fixture, markers in SERVER_MARKERS.items():
            if fixture in used:
                for marker in markers:
                    item.add_marker(marker)


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """A PostgreSQL server for this test process (one per xdist worker)."""
    with servers.postgres_server() as url:
        yield url


@pytest.fixture
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh, empty database for one test."""
    name = servers.create_database(pg_admin_url)
    try:
        yield pg_admin_url.rsplit("/", 1)[0] + "/" + name
    finally:
        servers.drop_database(pg_admin_url, name)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    with servers.s3_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    return servers.create_bucket(s3_endpoint)


@pytest.fixture
def embedded_settings(tmp_path: Path) -> Settings:
    """An embedded-default deployment in a temp folder, with a known admin token."""
    return Settings(
        data_dir=str(tmp_path / "data"),
        admin_token=ADMIN_TOKEN,
        encryption_key=secrets.token_hex(32),
        gc_interval_seconds=3600,
        log_level="WARNING",
    )


@pytest.fixture
def cluster_settings(
    embedded_settings: Settings, pg_url: str, s3_endpoint: str, s3_bucket: str
) -> Settings:
    """The same deployment on PostgreSQL + S3."""
    return embedded_settings.replace(
        database_url=pg_url,
        blob_backend="s3",
        blob_s3_endpoint=s3_endpoint,
        blob_s3_bucket=s3_bucket,
        database_pool_max_size=5,
    )


@pytest.fixture
def settings(request: pytest.FixtureRequest) -> Settings:
    name = "cluster_settings" if BACKEND == "cluster" else "embedded_settings"
    found: Settings = request.getfixturevalue(name)
    return found


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[TestAppProtocol]:
    async with create_app(settings).test_app() as test_app:
        yield test_app


@pytest.fixture
def client(app: TestAppProtocol) -> TestClientProtocol:
    return app.test_client()


@pytest.fixture
def admin_headers() -> dict[str, str]:
    return {"Authorization": f"token {ADMIN_TOKEN}", "Accept": "application/vnd.pulumi+9"}
