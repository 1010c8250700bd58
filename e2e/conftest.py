"""Fixtures of the e2e suite: the real `pulumi` CLI against `procella serve`.

* ``toolchain``: the pinned CLI, Python language host and SDK venv (built once per machine by
  procella_testing/pulumi_toolchain.py, under a file lock, so pytest-xdist workers share one build).
  PROCELLA_E2E_CLI_VERSION picks one of the pinned CLI versions (default: the newest pin).
* ``server``: one ``procella serve`` (or, with PROCELLA_E2E_TOPOLOGY=cluster or containers,
  three replicas behind Caddy) per xdist worker and mode. It is parametrized, so every
  test runs against ``journal`` (the CLI sends journal entries, no checkpoints), ``delta``
  (journaling off; delta checkpoints with cutoff 0: the CLI sends ``checkpointdelta`` from
  the second checkpoint of every update on) and ``full`` (journaling off; the whole
  deployment on every ``PATCH .../checkpoint``). PROCELLA_E2E_MODES narrows that (nox's
  compatibility run of the older CLI uses ``journal`` alone). Modules marked ``any_mode``
  (access, config, identity, audit, metrics: not about how the state is sent) run in
  journal mode only.
* ``pulumi``: the CLI logged in to that server as the site admin, with a fresh PULUMI_HOME.
* ``names``: an org, project and stack names no other test uses (tests share a server).

When a test fails, the part of the server log written during the test is attached to its
report. PROCELLA_E2E_LOG_LEVEL=DEBUG makes that log verbose.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest
from names import Names

from procella_testing import images, pulumi_toolchain, servers
from procella_testing.cluster import Cluster
from procella_testing.procella_server import MODES, ProcellaServer
from procella_testing.pulumi_cli import PulumiCLI, make_project

# PROCELLA_E2E_TOPOLOGY=cluster: three replicas on PostgreSQL + S3 behind Caddy, as local
# processes (procella_testing/cluster.py); =containers: the same through a Docker engine with
# the project's image (containers.py).
TOPOLOGY = os.environ.get("PROCELLA_E2E_TOPOLOGY", "single")
if TOPOLOGY not in ("single", "cluster", "containers"):
    raise RuntimeError("PROCELLA_E2E_TOPOLOGY must be single, cluster or containers")
CLUSTER = TOPOLOGY in ("cluster", "containers")  # replicas behind Caddy
CONTAINERS = TOPOLOGY == "containers"
if CONTAINERS:
    # Only then: it needs testcontainers and the docker SDK, which the nox environments of
    # the other topologies do not install.
    import containers
# PROCELLA_E2E_CLI_VERSION: which pinned CLI drives the suite (nox runs it with each pin).
CLI_VERSION = os.environ.get("PROCELLA_E2E_CLI_VERSION", pulumi_toolchain.DEFAULT_CLI_VERSION)
if CLI_VERSION not in pulumi_toolchain.CLI_VERSIONS:
    raise RuntimeError(
        f"PROCELLA_E2E_CLI_VERSION is {CLI_VERSION!r}; the pinned pulumi CLI versions are "
        + ", ".join(pulumi_toolchain.CLI_VERSIONS)
    )
# PROCELLA_E2E_MODES: the server modes to run, comma-separated (default: all three).
SERVER_MODES = sorted(os.environ.get("PROCELLA_E2E_MODES", ",".join(MODES)).split(","))
if not SERVER_MODES or not set(SERVER_MODES) <= set(MODES):
    raise RuntimeError(f"PROCELLA_E2E_MODES must name some of {', '.join(MODES)}")
# Only the cluster has replicas to kill. The console's browser tests check pages, which read
# the same services whatever the CLI: they run with the default pin (CI time), not again
# in the compatibility run.
collect_ignore = [] if CLUSTER else ["test_cluster.py"]
if CLI_VERSION != pulumi_toolchain.DEFAULT_CLI_VERSION:
    collect_ignore.append("test_console.py")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: drives the real pulumi CLI against procella serve")
    config.addinivalue_line(
        "markers",
        "any_mode: the test's subject is not how the CLI sends the state (access, config, "
        "identity, audit, metrics), so it runs in one mode only: journal where it is selected",
    )


def pytest_report_header() -> str:
    return f"pulumi CLI: v{CLI_VERSION}"


# Started first, so that the two workers do not wait for one of them at the end.
SLOWEST_FIRST = ("test_large.py",)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Three modes of a test whose subject is not the state's transport would test the same
    # thing three times (CI time); the modes' own tests cover the transport.
    one_mode = "journal" if "journal" in SERVER_MODES else SERVER_MODES[0]
    kept, dropped = [], []
    for item in items:
        item.add_marker(pytest.mark.e2e)
        callspec = getattr(item, "callspec", None)
        mode = callspec.params.get("server") if callspec is not None else None
        if item.get_closest_marker("any_mode") and mode not in (None, one_mode):
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    kept.sort(key=lambda item: item.path.name not in SLOWEST_FIRST)  # stable: order kept
    items[:] = kept


@pytest.fixture(scope="session")
def toolchain() -> Path:
    try:
        return pulumi_toolchain.ensure_toolchain(CLI_VERSION, verbose=True)
    except pulumi_toolchain.ToolchainError as exc:
        pytest.fail(f"cannot build the pulumi toolchain: {exc}", pytrace=False)


@pytest.fixture(scope="session", params=SERVER_MODES, ids=str)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProcellaServer | Cluster]:
    mode = str(request.param)
    root = tmp_path_factory.mktemp(f"procella-{mode}")
    instance: ProcellaServer | Cluster
    if CLUSTER:
        instance = make_cluster(request, root, mode)
    else:
        instance = ProcellaServer(root / "data", mode=mode, cutoff_bytes=0)
    # The finalizer runs even when start() or a test fails, so nothing outlives us.
    request.addfinalizer(instance.stop)
    instance.start()
    yield instance


def make_cluster(request: pytest.FixtureRequest, root: Path, mode: str) -> Cluster:
    """Three replicas on a fresh database and bucket of this worker's services: local
    processes, or containers of the project's image (not started yet)."""
    postgres, s3 = request.getfixturevalue("postgres"), request.getfixturevalue("s3")
    settings = {
        "database_url": postgres.url(servers.create_database(postgres.admin_url)),
        "s3_endpoint": s3,
        "bucket": servers.create_bucket(s3),
        "mode": mode,
    }
    if CONTAINERS:
        tags = request.getfixturevalue("container_images")
        return containers.ContainerCluster(root, images=tags, **settings)
    return Cluster(root, **settings)


@pytest.fixture(scope="session")
def container_images() -> dict[str, str]:
    """The containers topology's images (procella_testing/images.py), built once per machine and
    reused while nothing they are made of changes. No engine: the topology fails, loudly."""
    problem = images.engine_available()
    if problem:
        pytest.fail(
            f"PROCELLA_E2E_TOPOLOGY=containers needs a Docker engine: {problem}", pytrace=False
        )
    with images.build_lock():
        containers.remove_orphans()
        return {
            "procella": images.ensure_procella(),
            "postgres": images.ensure_standin("postgres"),
            "s3": images.ensure_standin("s3"),
            "caddy": images.ensure_standin("caddy"),
        }


@pytest.fixture(scope="session")
def postgres(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[servers.PostgresServer | containers.PostgresContainer]:
    """The cluster topologies' PostgreSQL server (one per xdist worker)."""
    server: servers.PostgresServer | containers.PostgresContainer
    if CONTAINERS:
        image = request.getfixturevalue("container_images")["postgres"]
        server = containers.PostgresContainer(image, tmp_path_factory.mktemp("postgres"))
        request.addfinalizer(server.stop)  # also when it fails to start
        server.start()
    else:
        server = servers.PostgresServer.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The cluster topologies' S3 server: moto on 127.0.0.1, in a container or not."""
    if CONTAINERS:
        image = request.getfixturevalue("container_images")["s3"]
        with (
            servers.aws_test_env(),
            containers.s3_server(image, tmp_path_factory.mktemp("s3")) as endpoint,
        ):
            yield endpoint
    else:
        with servers.s3_server() as endpoint:
            yield endpoint


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the server log written during a failed test to its report."""
    report = yield
    server = getattr(item, "funcargs", {}).get("server")
    start = getattr(item, "_procella_log_start", None)
    if report.failed and isinstance(server, ProcellaServer | Cluster) and start is not None:
        report.sections.append(("procella serve log during the test", server.log_tail(start)))
    return report


@pytest.fixture
def pulumi(
    request: pytest.FixtureRequest, toolchain: Path, server: ProcellaServer, tmp_path: Path
) -> Iterator[PulumiCLI]:
    # Where the server log stood when the test began (see the report hook above).
    request.node._procella_log_start = server.log_size()
    cli = PulumiCLI(
        toolchain,
        tmp_path / "pulumi-home",
        backend_url=server.url,
        token=server.admin_token,
        cwd=tmp_path,
    )
    cli.login()
    yield cli
    cli.close()


@pytest.fixture
def other_cli(pulumi: PulumiCLI, tmp_path: Path) -> Iterator[Callable[[str], PulumiCLI]]:
    """A second user (another token, its own PULUMI_HOME), logged in to the same server."""
    made: list[PulumiCLI] = []

    def make(token: str) -> PulumiCLI:
        cli = pulumi.with_token(token, tmp_path / f"pulumi-home-{len(made) + 1}")
        cli.login()
        made.append(cli)
        return cli

    yield make
    for cli in made:
        cli.close()


@pytest.fixture
def names() -> Names:
    token = secrets.token_hex(4)
    return Names(org=f"e2e-{token}", project=f"proj-{token}")


@pytest.fixture
def project_dir(names: Names, tmp_path: Path) -> Path:
    """The `things` program as project ``names.project``, in this test's temp folder."""
    return make_project("things", names.project, tmp_path)
