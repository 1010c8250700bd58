"""External servers for a test run: a throwaway PostgreSQL server and an S3 server.

PostgreSQL comes from the machine's binaries (Debian's postgresql package); ``initdb``
refuses to run as root, so as root the server runs as the ``postgres`` user. S3 is moto's
server, a real S3 protocol endpoint on 127.0.0.1. Both are started per test session and
stopped by their owner even when tests fail.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

from procella_testing.processes import free_port, pid_alive

AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "procella-test",
    "AWS_SECRET_ACCESS_KEY": "procella-test",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def postgres_bindir() -> Path:
    """The newest installed PostgreSQL server binaries."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_major, reverse=True)
    if found:
        return Path(found[0]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise RuntimeError(
        "PostgreSQL server binaries not found: install them (Debian: apt-get install -y "
        "postgresql) or set PROCELLA_TEST_DATABASE_URL to an existing server"
    )


def _major(path: str) -> int:
    try:
        return int(Path(path).parent.parent.name)
    except ValueError:
        return 0


@dataclass
class PostgresServer:
    """A PostgreSQL server in a temp folder, trust auth, listening on 127.0.0.1 only."""

    root: Path
    port: int
    bindir: Path
    as_postgres: bool  # the server runs as the postgres user (we are root)

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    @classmethod
    def start(cls) -> PostgresServer:
        stop_orphans()
        root = Path(tempfile.mkdtemp(prefix=PREFIX))
        server = cls(root, free_port(), postgres_bindir(), os.geteuid() == 0)
        if server.as_postgres:
            shutil.chown(root, "postgres", "postgres")
        try:
            server._run(
                "initdb",
                "-D",
                str(root / "data"),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
            )
            options = (
                f"-c listen_addresses=127.0.0.1 -p {server.port} -k {root} -c fsync=off "
                "-c full_page_writes=off -c max_connections=300 "
                "-c shared_preload_libraries=pg_stat_statements"
            )
            server._run(
                "pg_ctl",
                "-D",
                str(root / "data"),
                "-l",
                str(root / "log"),
                "-w",
                "-t",
                "60",
                "-o",
                options,
                "start",
            )
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        (root / OWNER_FILE).write_text(str(os.getpid()))
        return server

    def _run(self, program: str, *args: str) -> None:
        argv = [str(self.bindir / program), *args]
        if self.as_postgres:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        subprocess.run(argv, check=True, capture_output=True, timeout=120)

    def _pg_ctl(self, *args: str) -> None:
        self._run("pg_ctl", "-D", str(self.root / "data"), "-w", *args)

    def restart(self) -> None:
        """Restart the server (every connection is cut, the data stays)."""
        # -l: the new postmaster must not inherit our pipes, or waiting for it never ends.
        self._pg_ctl("-l", str(self.root / "log"), "-m", "fast", "restart")

    def stop(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self._pg_ctl("-m", "immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


PREFIX = "procella-pg-"
OWNER_FILE = "owner.pid"


def stop_orphans() -> None:
    """Stop servers whose test process died without stopping them (e.g. killed by a
    timeout: its finalizers never ran). Only servers this module started are touched."""
    for root in Path(tempfile.gettempdir()).glob(PREFIX + "*"):
        try:
            owner = int((root / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # still starting, or not one of ours
        if pid_alive(owner):
            continue
        orphan = PostgresServer(root, 0, postgres_bindir(), os.geteuid() == 0)
        orphan.stop()


def create_database(admin_url: str) -> str:
    """A fresh, empty database on the server; returns its name."""
    name = "t_" + uuid.uuid4().hex[:16]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Admin URL of a server: PROCELLA_TEST_DATABASE_URL's, or one started for us."""
    given = os.environ.get("PROCELLA_TEST_DATABASE_URL")
    if given:
        yield given
        return
    server = PostgresServer.start()
    try:
        yield server.admin_url
    finally:
        server.stop()


@contextlib.contextmanager
def s3_server() -> Iterator[str]:
    """Endpoint URL of moto's S3 server on 127.0.0.1, with test credentials in the env."""
    from moto.server import ThreadedMotoServer

    with aws_test_env():
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            yield f"http://{host}:{port}"
        finally:
            server.stop()


@contextlib.contextmanager
def aws_test_env() -> Iterator[None]:
    """Test credentials in this process's environment (boto3 clients of the tests), then
    the environment as it was."""
    saved = {key: os.environ.get(key) for key in AWS_TEST_ENV}
    os.environ.update(AWS_TEST_ENV)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def create_bucket(endpoint: str) -> str:
    import boto3

    name = "procella-" + uuid.uuid4().hex[:12]
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


def install_failing_trigger(url: str, table: str, sqlstate: str) -> None:
    """Make every INSERT into ``table`` fail with PostgreSQL error ``sqlstate``."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION fail_once() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"RAISE EXCEPTION 'injected' USING ERRCODE = '{sqlstate}'; END $$"
        )
        conn.execute(
            f"CREATE TRIGGER fail_once BEFORE INSERT ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION fail_once()"
        )


def remove_failing_trigger(url: str, table: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP TRIGGER fail_once ON {table}")
        conn.execute("DROP FUNCTION fail_once()")
