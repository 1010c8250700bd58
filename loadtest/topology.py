"""The servers a load run targets, started on this machine from the repository's own helpers.

* ``single``: one ``procella serve`` on the embedded default (SQLite + local files),
  ``procella_testing``'s ``ProcellaServer``.
* ``cluster``: ``procella_testing``'s ``Cluster`` (three replicas behind Caddy with the
  repository's Caddyfile) on its PostgreSQL (``servers.py``: pg_stat_statements
  preloaded) and moto S3 server.

Both listen on 127.0.0.1 only, on free ports, in a temp folder of their own. Everything is
stopped by the ExitStack, in reverse order, even when starting fails half-way.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from procella_testing import servers
from procella_testing.cluster import Cluster
from procella_testing.procella_server import ProcellaServer

# The e2e cluster sends every checkpoint over 4 KB to S3 and advertises deltas from byte 0,
# to exercise those paths with small test programs. A load run wants the production
# defaults (checkpoints up to 1 MiB inline in PostgreSQL, deltas from 512 KiB), so these
# are dropped from the replicas' environment and the server's own defaults apply.
_E2E_ONLY = ("PROCELLA_CHECKPOINT_INLINE_MAX_BYTES", "PROCELLA_DELTA_CHECKPOINT_CUTOFF_BYTES")


@dataclass
class Postgres:
    server: servers.PostgresServer
    database: str

    @property
    def psql(self) -> Path:
        return Path(self.server.bindir) / "psql"

    @property
    def postmaster_pid(self) -> int:
        # The first line of postmaster.pid is the postmaster's process id.
        return int((self.server.root / "data" / "postmaster.pid").read_text().split()[0])


@dataclass
class Running:
    kind: str
    url: str
    admin_token: str
    replica_pids: list[int]
    replica_urls: list[str]  # each replica directly, for its /metrics
    postgres: Postgres | None = None
    stop_servers: list[ProcellaServer | Cluster] = field(default_factory=list)

    def stop_replicas(self) -> None:
        """Stop the HTTP side early (idempotent): closing the pools makes every PostgreSQL
        backend publish its statistics before they are read."""
        for server in self.stop_servers:
            server.stop()


@contextlib.contextmanager
def start(kind: str, root: Path, server_env: Mapping[str, str]) -> Iterator[Running]:
    with contextlib.ExitStack() as stack:
        if kind == "single":
            yield _single(stack, root, server_env)
        elif kind == "cluster":
            yield _cluster(stack, root, server_env)
        else:
            raise ValueError(f"unknown topology {kind!r}")


def _single(stack: contextlib.ExitStack, root: Path, env: Mapping[str, str]) -> Running:
    # Delta checkpoints on (LOAD_DELTA=auto sends them where the CLI would), with the
    # server's default cutoff (cutoff_bytes=None), as in production.
    server = ProcellaServer(root / "data", mode="delta", cutoff_bytes=None, extra_env=env)
    stack.callback(server.stop)
    server.start()
    assert server.process is not None
    pids = [server.process.pid]
    return Running("single", server.url, server.admin_token, pids, [server.url], None, [server])


def _cluster(stack: contextlib.ExitStack, root: Path, env: Mapping[str, str]) -> Running:
    pg = servers.PostgresServer.start()
    stack.callback(pg.stop)
    # moto runs as a thread of this process (its werkzeug access log would flood the
    # report); it also sets the AWS test credentials.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    endpoint = stack.enter_context(servers.s3_server())
    database = servers.create_database(pg.admin_url)
    cluster = Cluster(
        root / "cluster",
        database_url=pg.url(database),
        s3_endpoint=endpoint,
        bucket=servers.create_bucket(endpoint),
        mode="delta",
    )
    for replica in cluster.replicas:
        for name in _E2E_ONLY:
            replica.env.pop(name, None)
        replica.env.update(env)
    stack.callback(cluster.stop)
    cluster.start()
    # A replica whose port was taken rebuilds its environment on a new port; then the
    # e2e-only values are back and this run would not measure what it says.
    for replica in cluster.replicas:
        if any(name in replica.env and name not in env for name in _E2E_ONLY):
            raise RuntimeError("a replica restarted on a new port with e2e settings; run again")
    pids = [r.process.pid for r in cluster.replicas if r.process is not None]
    urls = [r.url for r in cluster.replicas]
    postgres = Postgres(pg, database)
    return Running("cluster", cluster.url, cluster.admin_token, pids, urls, postgres, [cluster])
