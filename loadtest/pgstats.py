"""PostgreSQL's own view of a load run, read with `psql` (standard library only).

* ``Sampler``: a thread that samples ``pg_stat_activity`` (Procella's connections by
  state and wait event) about once a second while the load runs.
* ``Counters``: ``pg_stat_database`` and ``pg_stat_wal`` before and after; their deltas give
  the time backends spent executing or sitting idle inside a transaction, per second of
  wall time: the average number of busy connections, exact rather than sampled.
* ``top_statements``: ``pg_stat_statements`` (calls, total and mean time).
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

SEP = "\x1f"  # unit separator: never in a query text
APP = "procella"  # application_name of every Procella connection


class Psql:
    def __init__(self, psql: Path, port: int, database: str) -> None:
        self.argv = [
            str(psql),
            *("-X", "-q", "-A", "-t", "-F", SEP, "-v", "ON_ERROR_STOP=1"),
            *("-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", database),
        ]

    def rows(self, sql: str, timeout: float = 20.0) -> list[list[str]]:
        result = subprocess.run(
            [*self.argv, "-c", sql],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={"PGCONNECT_TIMEOUT": "5", "PATH": "/usr/bin:/bin"},
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr.strip()}")
        return [line.split(SEP) for line in result.stdout.splitlines() if line]

    def execute(self, sql: str) -> None:
        self.rows(sql)


def prepare(psql: Psql) -> dict[str, str]:
    """Turn statement statistics on; return the settings that shape commit cost.

    procella_testing/servers.py starts PostgreSQL with fsync and full_page_writes off (fast
    tests), and command-line settings outrank ALTER SYSTEM, so a run reports them rather than
    hiding it.
    """
    psql.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    names = ("fsync", "full_page_writes", "synchronous_commit", "max_connections")
    rows = psql.rows(
        "SELECT name, setting FROM pg_settings WHERE name IN "
        f"({', '.join(repr(n) for n in names)}) ORDER BY name"
    )
    return {name: value for name, value in rows}


def reset(psql: Psql) -> None:
    psql.execute("SELECT pg_stat_statements_reset()")


# pg_stat_activity sampling ---------------------------------------------------------------

_ACTIVITY = (
    "SELECT state, coalesce(wait_event_type, ''), coalesce(wait_event, ''), count(*) "
    "FROM pg_stat_activity WHERE datname = current_database() "
    f"AND application_name = '{APP}' AND backend_type = 'client backend' GROUP BY 1, 2, 3"
)


@dataclass
class Activity:
    samples: int = 0
    connections: list[int] = field(default_factory=list)
    active: list[int] = field(default_factory=list)
    in_transaction: list[int] = field(default_factory=list)  # "idle in transaction"
    waits: Counter[str] = field(default_factory=Counter)  # of active backends, summed

    def add(self, rows: list[list[str]]) -> None:
        self.samples += 1
        total = active = in_tx = 0
        for state, wait_type, wait_event, count_text in rows:
            count = int(count_text)
            total += count
            if state == "active":
                active += count
                # An active backend with no wait event is running on a CPU.
                self.waits[f"{wait_type}:{wait_event}" if wait_type else "CPU"] += count
            elif state.startswith("idle in transaction"):
                in_tx += count
        self.connections.append(total)
        self.active.append(active)
        self.in_transaction.append(in_tx)


class Sampler(threading.Thread):
    """Samples pg_stat_activity every ``interval`` s until stopped or ``deadline``."""

    def __init__(self, psql: Psql, *, interval: float, max_seconds: float) -> None:
        super().__init__(name="pg-activity-sampler", daemon=True)
        self.psql = psql
        self.interval = interval
        self.deadline = time.monotonic() + max_seconds
        self.max_samples = int(max_seconds / interval) + 1
        self.activity = Activity()
        self.errors = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        for _ in range(self.max_samples):
            if self._stop_event.is_set() or time.monotonic() > self.deadline:
                return
            try:
                self.activity.add(self.psql.rows(_ACTIVITY, timeout=5))
            except (RuntimeError, subprocess.TimeoutExpired):
                self.errors += 1  # a missed sample is no reason to stop the run
            self._stop_event.wait(self.interval)

    def stop(self) -> Activity:
        self._stop_event.set()
        self.join(timeout=10)
        return self.activity


# Counters ----------------------------------------------------------------------------------

_DATABASE_COLUMNS = (
    "xact_commit",
    "xact_rollback",
    "blks_read",
    "blks_hit",
    "tup_returned",
    "tup_inserted",
    "tup_updated",
    "tup_deleted",
    "deadlocks",
    "active_time",  # ms spent executing statements (state active), all backends
    "idle_in_transaction_time",  # ms spent idle inside an open transaction
)
_WAL_COLUMNS = ("wal_records", "wal_bytes", "wal_write")


def counters(psql: Psql) -> dict[str, float]:
    sql = (
        f"SELECT {', '.join(_DATABASE_COLUMNS)} FROM pg_stat_database "
        "WHERE datname = current_database()"
    )
    (row,) = psql.rows(sql)
    values = {name: float(v or 0) for name, v in zip(_DATABASE_COLUMNS, row, strict=True)}
    (wal,) = psql.rows(f"SELECT {', '.join(_WAL_COLUMNS)} FROM pg_stat_wal")
    values.update({name: float(v or 0) for name, v in zip(_WAL_COLUMNS, wal, strict=True)})
    return values


def flush_stats(psql: Psql) -> None:
    """Backends publish their counters at most once a second when idle: wait for that."""
    time.sleep(1.5)
    psql.execute("SELECT pg_stat_clear_snapshot()")


# pg_stat_statements --------------------------------------------------------------------------


@dataclass(frozen=True)
class Statement:
    calls: int
    total_ms: float
    mean_ms: float
    rows: int
    query: str


def top_statements(psql: Psql, limit: int) -> tuple[list[Statement], int, float]:
    """The ``limit`` statements with the most total time; and all calls and time."""
    where = (
        "dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND query NOT LIKE '%pg_stat%' AND query NOT LIKE '%pg_reload_conf%'"
    )
    rows = psql.rows(
        "SELECT calls, total_exec_time, mean_exec_time, rows, "
        "regexp_replace(query, '\\s+', ' ', 'g') FROM pg_stat_statements "
        f"WHERE {where} ORDER BY total_exec_time DESC LIMIT {int(limit)}"
    )
    (totals,) = psql.rows(
        "SELECT coalesce(sum(calls), 0), coalesce(sum(total_exec_time), 0) "
        f"FROM pg_stat_statements WHERE {where}"
    )
    statements = [
        Statement(int(calls), float(total), float(mean), int(count), query)
        for calls, total, mean, count, query in rows
    ]
    return statements, int(totals[0]), float(totals[1])


def checkpoint_storage(psql: Psql) -> dict[str, float]:
    """Where checkpoint texts ended up, and how big the database grew."""
    (row,) = psql.rows(
        "SELECT count(*), count(blob_key), coalesce(avg(size), 0), "
        "pg_database_size(current_database()) FROM checkpoints"
    )
    rows, in_blobs, mean_size, db_bytes = (float(v) for v in row)
    return {"rows": rows, "in_blobs": in_blobs, "mean_size": mean_size, "db_bytes": db_bytes}
