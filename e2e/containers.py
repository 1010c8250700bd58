"""The containers topology of the e2e suite: the cluster topology
(procella_testing/cluster.py) run through a Docker engine with the project's own image, as
the compose "cluster" profile runs it.

* PostgreSQL and an S3 server: local stand-in images (tests/standins), since upstream
  images cannot be pulled here;
* ``procella migrate`` as a container of its own, run to completion before any replica;
* three replica containers of ``procella:local`` (deployments/Dockerfile) with
  ``PROCELLA_MIGRATE_ON_START=false``, as in the bundles;
* Caddy in a container with the repository's Caddyfile, mounted read-only.

Every container uses the host's network (the engine runs without a bridge) and listens on
127.0.0.1 only, on ports probed free. Containers are started with testcontainers and
driven with the docker SDK; each carries a label with the pid of the pytest process that
started it, so its owner removes it even when a test fails, and a later run removes those
of an owner that died (``remove_orphans``).
"""

from __future__ import annotations

import contextlib
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

# Before testcontainers is imported: its reaper container (Ryuk) is an image from Docker Hub,
# which cannot be pulled here; our own labels and finalizers remove what we start.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

import docker
import psycopg
from docker.models.containers import Container as SDKContainer
from testcontainers.core.container import DockerContainer

from procella_testing.cluster import Cluster
from procella_testing.procella_server import ProcellaServer
from procella_testing.processes import Result, free_port, pid_alive, poll

REPO = Path(__file__).resolve().parent.parent
REPLICAS = 3
OWNER_LABEL = "procella.e2e.owner"
START_TIMEOUT = 90.0


def remove_orphans() -> None:
    """Remove containers a crashed or killed test run left behind (their owner is gone)."""
    client = docker.from_env()
    try:
        for container in client.containers.list(all=True, filters={"label": OWNER_LABEL}):
            owner = int(container.labels.get(OWNER_LABEL, "0") or 0)
            if owner and not pid_alive(owner):
                container.remove(force=True, v=True)
    finally:
        client.close()


class Container:
    """One container on the host network; its output is copied to ``log_path`` as it comes."""

    def __init__(
        self,
        image: str,
        command: Sequence[str],
        *,
        env: Mapping[str, str],
        log_path: Path,
        volumes: Sequence[tuple[Path, str]] = (),
        healthcheck: Mapping[str, Any] | None = None,
    ) -> None:
        self.log_path = log_path
        kwargs: dict[str, Any] = {"network_mode": "host", "labels": {OWNER_LABEL: str(os.getpid())}}
        if healthcheck is not None:
            kwargs["healthcheck"] = dict(healthcheck)
        self._spec = (
            DockerContainer(image, env=dict(env)).with_command(list(command)).with_kwargs(**kwargs)
        )
        for host, target in volumes:
            self._spec.with_volume_mapping(host, target, "ro")
        self._started = False

    @property
    def sdk(self) -> SDKContainer:
        return self._spec.get_wrapped_container()

    def start(self) -> Container:
        self._spec.start()
        self._started = True
        threading.Thread(target=self._copy_logs, daemon=True).start()
        return self

    def _copy_logs(self) -> None:
        with open(self.log_path, "ab") as out, contextlib.suppress(Exception):
            for chunk in self.sdk.logs(stream=True, follow=True):
                out.write(chunk)
                out.flush()

    def running(self) -> bool:
        if not self._started:
            return False
        try:
            self.sdk.reload()
        except docker.errors.NotFound:
            return False
        return bool(self.sdk.status == "running")

    def wait(self, timeout: float) -> int:
        """The exit code, once the container has stopped."""
        return int(self.sdk.wait(timeout=timeout)["StatusCode"])

    def kill(self) -> None:
        self.sdk.kill(signal="SIGKILL")
        self.sdk.wait(timeout=30)

    def exec(self, args: Sequence[str]) -> Result:
        code, (out, err) = self.sdk.exec_run(list(args), demux=True)
        return Result(tuple(args), int(code), (out or b"").decode(), (err or b"").decode())

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """Remove the container (with its anonymous volumes), whatever state it is in."""
        if self._started:
            with contextlib.suppress(docker.errors.NotFound):
                self._spec.stop()
            self._started = False


# --- the services ---------------------------------------------------------------------------


class PostgresContainer:
    """The stand-in PostgreSQL image on 127.0.0.1, trust auth; the interface of
    procella_testing.servers.PostgresServer that the conftest uses (admin_url, url, stop)."""

    def __init__(self, image: str, root: Path) -> None:
        self.port = free_port()
        self.container = Container(
            image,
            ["postgres", "-c", "listen_addresses=127.0.0.1", "-p", str(self.port)],
            env={},
            log_path=root / "postgres.log",
        )

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> PostgresContainer:
        self.container.start()
        poll(self._ready, timeout=START_TIMEOUT, interval=0.3, message="PostgreSQL container")
        return self

    def _ready(self) -> bool:
        if not self.container.running():
            raise RuntimeError(f"PostgreSQL container exited:\n{self.container.log_text()}")
        try:
            with psycopg.connect(self.admin_url, connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def stop(self) -> None:
        self.container.stop()


@contextlib.contextmanager
def s3_server(image: str, root: Path) -> Iterator[str]:
    """The S3 stand-in (moto behind MinIO's command line) on 127.0.0.1; its endpoint URL."""
    port = free_port()
    container = Container(
        image,
        ["server", "/data", "--address", f"127.0.0.1:{port}"],
        env={},
        log_path=root / "s3.log",
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        container.start()
        poll(
            lambda: _answers(endpoint + "/", container),
            timeout=START_TIMEOUT,
            interval=0.3,
            message="S3 container",
        )
        yield endpoint
    finally:
        container.stop()


def _answers(url: str, container: Container) -> bool:
    if not container.running():
        raise RuntimeError(f"container exited:\n{container.log_text()}")
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except OSError:
        return False


# --- the cluster ----------------------------------------------------------------------------


class ReplicaContainer:
    """One replica: a container of the project's image, configured exactly as a local
    ``ProcellaServer`` of the same mode would be (same settings, same port choice)."""

    def __init__(self, image: str, config: ProcellaServer, log_path: Path) -> None:
        self.config = config
        self.port = config.port
        self.url = config.url
        self.admin_token = config.admin_token
        # Only Procella's own settings and the S3 credentials go in: nothing of this shell.
        env = {k: v for k, v in config.env.items() if k.startswith(("PROCELLA_", "AWS_"))}
        env.update(
            {
                "PROCELLA_DATA_DIR": "/var/lib/procella",
                # The migrate container owns the schema, as in every bundle.
                "PROCELLA_MIGRATE_ON_START": "false",
            }
        )
        self.env = env
        self.log_path = log_path
        self.container = Container(
            image,
            ["serve"],
            env=env,
            log_path=log_path,
            # The image's HEALTHCHECK asks :9090; on the host network each replica has its own.
            healthcheck={
                "test": [
                    "CMD",
                    "python",
                    "-c",
                    "import urllib.request; urllib.request.urlopen("
                    f"'http://127.0.0.1:{self.port}/healthz', timeout=2)",
                ],
                "interval": 2_000_000_000,
                "timeout": 3_000_000_000,
                "retries": 3,
            },
        )

    def running(self) -> bool:
        return self.container.running()

    def start(self) -> None:
        self.container.start()
        poll(self._healthy, timeout=START_TIMEOUT, interval=0.2, message=f"{self.url}/healthz")

    def _healthy(self) -> bool:
        return _answers(self.url + "/healthz", self.container)

    def stop(self) -> None:
        self.container.stop()

    def admin_command(self, *args: str) -> Result:
        """`docker exec <replica> procella <args>`, as an operator of a container runs it."""
        result = self.container.exec(["procella", *args])
        if result.rc != 0:
            raise AssertionError(f"command failed:\n{result.describe()}")
        return result

    def create_token(self, org: str, role: str, user: str | None = None) -> str:
        """`procella token create` in the container: the token is its last stdout line."""
        args = ["token", "create", "--org", org, "--role", role]
        if user is not None:
            args += ["--user", user]
        return self.admin_command(*args).stdout.strip().splitlines()[-1].strip()

    def api(
        self, method: str, path: str, *, token: str | None = None, body: Any = None
    ) -> tuple[int, Any]:
        return self.config.api(method, path, token=token or self.admin_token, body=body)

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_tail(self, since: int = 0, max_bytes: int = 20000) -> str:
        data = self.log_path.read_bytes()[since:] if self.log_path.exists() else b""
        if len(data) > max_bytes:
            data = b"...(truncated)...\n" + data[-max_bytes:]
        return data.decode(errors="replace")


class ContainerCluster(Cluster):
    """``Cluster``'s interface over containers; tests that take a ``Cluster`` take this."""

    def __init__(
        self,
        root: Path,
        *,
        database_url: str,
        s3_endpoint: str,
        bucket: str,
        mode: str,
        images: Mapping[str, str],
    ) -> None:
        # Cluster's settings and replica configurations, then containers in their place.
        super().__init__(
            root, database_url=database_url, s3_endpoint=s3_endpoint, bucket=bucket, mode=mode
        )
        self.images = dict(images)
        self.containers = [
            ReplicaContainer(images["procella"], config, root / f"replica{i}.log")
            for i, config in enumerate(self.replicas)
        ]
        # The tests reach replicas through ``replicas`` (url, api, logs), which these offer.
        self.replicas = self.containers  # type: ignore[assignment]
        self._migrate = Container(
            images["procella"],
            ["migrate"],
            env=self.containers[0].env,
            log_path=root / "migrate.log",
        )
        self._caddy_container: Container | None = None

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._migrate.start()
        code = self._migrate.wait(timeout=START_TIMEOUT)
        if code != 0:
            raise RuntimeError(
                f"the migrate container exited with {code}:\n{self._migrate.log_text()}"
            )
        for replica in self.containers:
            replica.start()
        self._caddy_container = Container(
            self.images["caddy"],
            ["caddy", "run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"],
            env={
                "CADDY_BIND": "127.0.0.1",
                "CADDY_PORT": str(self.port),
                "CADDY_ADMIN": f"127.0.0.1:{free_port()}",
                "CADDY_UPSTREAMS": " ".join(f"127.0.0.1:{r.port}" for r in self.containers),
                # CADDY_RETRY_BODY is left to the Caddyfile's default, right for Debian's 2.6.
            },
            log_path=self.caddy_log_path,
            volumes=[(REPO / "Caddyfile", "/etc/caddy/Caddyfile")],
        ).start()
        caddy = self._caddy_container
        poll(
            lambda: _answers(self.url + "/healthz", caddy),
            timeout=START_TIMEOUT,
            message=f"{self.url}/healthz through the caddy container",
        )

    def stop(self) -> None:
        for container in (self._caddy_container, self._migrate):
            if container is not None:
                container.stop()
        for replica in self.containers:
            replica.stop()

    def kill_replica(self, index: int) -> None:
        """SIGKILL one replica's container, as a crash or an OOM kill would: no draining."""
        self.containers[index].container.kill()

    def live_replicas(self) -> list[Any]:
        return [r for r in self.containers if r.running()]

    def _first_live(self) -> ReplicaContainer:
        for replica in self.containers:
            if replica.running():
                return replica
        raise RuntimeError("no replica container is running")

    def create_token(self, org: str, role: str, user: str | None = None) -> str:
        return self._first_live().create_token(org, role, user)

    def admin_command(self, *args: str) -> Result:
        return self._first_live().admin_command(*args)
