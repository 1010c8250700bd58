"""Measure: SQL statements per checkpoint on PostgreSQL, from pg_stat_statements.

    python e2e/bench_pg_statements.py [--resources 100] [--delta on|off]

Starts PostgreSQL (with pg_stat_statements), moto's S3 server and one `procella serve` on
them, runs one `pulumi up --skip-preview` of N dynamic resources, and prints every
statement the server ran during that update with its call count, then the statements
and round trips per checkpoint request. Each statement Procella sends is one round trip
(there is no pipelining), so round trips = statements, BEGIN and COMMIT included.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import psycopg

from procella_testing import pulumi_toolchain, servers
from procella_testing.procella_server import ProcellaServer
from procella_testing.pulumi_cli import PulumiCLI, Stack, make_project

CHECKPOINT_ROUTES = ("checkpoint", "checkpointverbatim", "checkpointdelta")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--resources", type=int, default=100)
    parser.add_argument("--delta", choices=("on", "off"), default="on")
    args = parser.parse_args()
    toolchain = pulumi_toolchain.ensure_toolchain(verbose=True)
    pg = servers.PostgresServer.start()
    try:
        with servers.s3_server() as endpoint, tempfile.TemporaryDirectory() as work:
            return measure(args, toolchain, pg, endpoint, Path(work))
    finally:
        pg.stop()


def measure(
    args: argparse.Namespace,
    toolchain: Path,
    pg: servers.PostgresServer,
    endpoint: str,
    work: Path,
) -> int:
    database = servers.create_database(pg.admin_url)
    url = pg.url(database)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pg_stat_statements")
    env = {
        "PROCELLA_DATABASE_URL": url,
        "PROCELLA_BLOB_BACKEND": "s3",
        "PROCELLA_BLOB_S3_ENDPOINT": endpoint,
        "PROCELLA_BLOB_S3_BUCKET": servers.create_bucket(endpoint),
        "PROCELLA_ENCRYPTION_KEY": "11" * 32,
        "PROCELLA_LOG_LEVEL": "INFO",  # the access lines count the checkpoint requests
        **servers.AWS_TEST_ENV,
    }
    server = ProcellaServer(
        work / "data", mode="delta" if args.delta == "on" else "full", cutoff_bytes=0, extra_env=env
    )
    server.start()
    try:
        project = make_project("things", "bench", work)
        cli = PulumiCLI(
            toolchain,
            work / "home",
            backend_url=server.url,
            token=server.admin_token,
            cwd=project,
            timeout=1800,
        )
        cli.login()
        stack = Stack(cli, "organization/bench/dev", project).init()
        stack.ok("config", "set", "scenario", "bulk")
        stack.ok("config", "set", "count", str(args.resources))
        log_start = server.log_size()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SELECT pg_stat_statements_reset()")
        stack.ok("up", "--yes", "--skip-preview")
        with psycopg.connect(url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT calls, query FROM pg_stat_statements "
                "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                "AND query NOT LIKE '%pg_stat_statements%' ORDER BY calls DESC"
            ).fetchall()
    finally:
        server.stop()
    log = server.log_tail(log_start, 10**9).splitlines()
    requests = [line for line in log if " procella.access " in line]
    report(rows, requests, args)
    return 0


def count(requests: list[str], *routes: str) -> int:
    return sum(1 for line in requests if any(f"/{route} " in line for route in routes))


def calls_of(rows: list[tuple[int, str]], fragment: str) -> int:
    """Calls of the statements whose (normalized) text contains ``fragment``."""
    return sum(calls for calls, query in rows if fragment in " ".join(query.split()))


def report(rows: list[tuple[int, str]], requests: list[str], args: argparse.Namespace) -> None:
    checkpoints = count(requests, *CHECKPOINT_ROUTES)
    lease_calls = count(requests, *CHECKPOINT_ROUTES, "batch", "renew_lease", "complete")
    print(
        f"\npulumi up of {args.resources} resources (delta {args.delta}): "
        f"{len(requests)} HTTP requests, {checkpoints} checkpoint requests\n"
    )
    print(f"{'calls':>7}  statement")
    for calls, query in rows:
        print(f"{calls:7}  {' '.join(query.split())[:140]}")
    total = sum(calls for calls, _ in rows)
    print(f"\nall statements: {total} for {len(requests)} requests")
    saves = calls_of(rows, "WITH step AS")
    authorize = calls_of(rows, "FROM updates u JOIN stacks s")
    bases = calls_of(rows, "FROM checkpoints WHERE stack_id = $1 AND version = $2")
    print(f"checkpoint saves (one statement each): {saves} for {checkpoints} checkpoint requests")
    print(f"lease checks (one SELECT each): {authorize} for {lease_calls} update-token requests")
    print(f"delta base reads (cache misses): {bases}")
    per = (saves + checkpoints + bases) / max(checkpoints, 1)
    print(f"=> {per:.2f} statements = round trips per checkpoint (no BEGIN/COMMIT on this path)")


if __name__ == "__main__":
    sys.exit(main())
