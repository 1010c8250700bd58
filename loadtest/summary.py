"""One run's numbers side by side, and what they say about the database.

Everything here is arithmetic on what run.py measured: locust's results, CPU seconds per
component, and PostgreSQL's counters, samples and statements.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import pgstats
from report import LocustResult, route_table

CHECKPOINT_ROUTE = "/api/stacks/[stack]/update/[id]/checkpointverbatim"
DELTA_ROUTE = "/api/stacks/[stack]/update/[id]/checkpointdelta"
READ_ROUTE = "/api/stacks/[stack]"  # GET: one read, the same handler path as any request


@dataclass
class Database:
    settings: dict[str, str]
    counters: dict[str, float]  # deltas over the run
    activity: pgstats.Activity
    statements: list[pgstats.Statement]
    calls: int
    exec_ms: float
    storage: dict[str, float]


@dataclass
class Run:
    topology: str
    users: int
    seconds: float  # wall time of the locust process
    options: dict[str, str]
    locust: LocustResult
    locust_exit: int
    failures: list[tuple[int, str]]
    cpu: dict[str, float]  # CPU seconds per component, "machine" = all cores busy
    cores: int
    database: Database | None = None
    server_processes: int = 1  # replicas started (each one event loop)
    app: dict[str, float] = field(default_factory=dict)  # appmetrics deltas over the run
    notes: list[str] = field(default_factory=list)

    def share(self, component: str) -> float:
        """Cores used on average by a component."""
        return self.cpu.get(component, 0.0) / self.seconds if self.seconds else 0.0

    def route_p(self, name: str, which: str) -> int | None:
        for route in self.locust.routes:
            if route.name == name:
                return int(getattr(route, which))
        return None

    def checkpoint_p50(self) -> int | None:
        """p50 of the checkpoint route that carried most steps (verbatim, or deltas)."""
        routes = [r for r in self.locust.routes if r.name in (CHECKPOINT_ROUTE, DELTA_ROUTE)]
        busiest = max(routes, key=lambda r: r.requests, default=None)
        return None if busiest is None else busiest.p50

    def db_mean(self, counter: str) -> float:
        """A pg_stat_database time counter (ms) as average busy backends."""
        if self.database is None or not self.seconds:
            return 0.0
        return self.database.counters.get(counter, 0.0) / 1000 / self.seconds

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if self.database is not None:
            # asdict rebuilds a Counter from (key, count) pairs, counting the pairs: redo it.
            data["database"]["activity"]["waits"] = dict(self.database.activity.waits)
        data["rps"] = self.locust.rps
        return data


def _wait_shares(activity: pgstats.Activity, limit: int = 4) -> str:
    total = sum(activity.waits.values())
    if not total:
        return "no active backend in any sample"
    return ", ".join(
        f"{name} {100 * n / total:.0f}%" for name, n in activity.waits.most_common(limit)
    )


def _mean(values: list[int]) -> float:
    return sum(values) / len(values) if values else 0.0


def describe(run: Run) -> list[str]:
    lt = run.locust
    lines = [
        f"=== {run.topology}, {run.users} users, {run.seconds:.0f} s: "
        + " ".join(f"{k}={v}" for k, v in run.options.items())
        + " ===",
        f"locust: {lt.total.requests} requests in {lt.seconds:.1f} s = {lt.rps:.1f} req/s, "
        f"{lt.total.failures} failures (locust exit {run.locust_exit})",
        *route_table(lt),
    ]
    if run.failures:
        lines.append("failures (most frequent first):")
        lines += [f"  {n:>6}  {message[:140]}" for n, message in run.failures]
    parts = [f"{name} {run.share(name):.2f}" for name in run.cpu if name != "machine"]
    machine = run.share("machine")
    lines.append(
        f"CPU in cores (of {run.cores}): "
        + ", ".join(parts)
        + f"; machine {machine:.2f} ({100 * machine / run.cores:.0f}% busy)"
    )
    if run.locust.total.requests:
        per = 1000 * run.seconds / run.locust.total.requests  # ms of wall time per request
        costs = [
            f"{name} {run.share(name) * per:.2f}"
            for name in ("replicas", "postgres", "caddy", "locust")
            if name in run.cpu
        ]
        lines.append("CPU ms per request: " + ", ".join(costs))
    if run.app.get("statements"):
        lines.append(_describe_app_database(run))
    if run.database is not None:
        lines += _describe_database(run, run.database)
    lines += [f"note: {n}" for n in run.notes]
    lines.append("verdict: " + verdict(run))
    return lines


def _describe_app_database(run: Run) -> str:
    """The replicas' own metrics: statements, and time waiting on the database."""
    app, requests = run.app, max(run.locust.total.requests, 1)
    per_s = 1 / run.seconds if run.seconds else 0.0
    return (
        f"Procella's metrics: {app['statements'] * per_s:.0f} statements/s = "
        f"{app['statements'] / requests:.1f} per HTTP request, "
        f"{1000 * app['statement_seconds'] / requests:.2f} ms in statements and "
        f"{1000 * app['checkout_seconds'] / requests:.2f} ms waiting for a connection per "
        f"request ({app['statement_seconds'] * per_s:.2f} and "
        f"{app['checkout_seconds'] * per_s:.2f} s per s over the replicas)"
    )


def _describe_database(run: Run, db: Database) -> list[str]:
    c, act = db.counters, db.activity
    per_s = 1 / run.seconds if run.seconds else 0.0
    requests = max(run.locust.total.requests, 1)
    hits = c.get("blks_hit", 0.0)
    hit_ratio = hits / max(hits + c.get("blks_read", 0.0), 1)
    lines = [
        "PostgreSQL (" + ", ".join(f"{k}={v}" for k, v in db.settings.items()) + "):",
        f"  statements {db.calls * per_s:.0f}/s = {db.calls / requests:.1f} per HTTP request; "
        f"execution {db.exec_ms / 1000 * per_s:.2f} s per s",
        f"  backends busy on average: executing {run.db_mean('active_time'):.2f}, "
        f"idle in transaction {run.db_mean('idle_in_transaction_time'):.2f}  (pg_stat_database)",
        f"  sampled {act.samples}x: connections max {max(act.connections, default=0)}, "
        f"active mean {_mean(act.active):.1f} max {max(act.active, default=0)}, "
        f"idle in transaction mean {_mean(act.in_transaction):.1f} "
        f"max {max(act.in_transaction, default=0)}",
        f"  active backends were in: {_wait_shares(act)}",
        "    (CPU: running; Client:ClientRead: waiting for the replica to send more of the "
        "statement; Lock:*: row or relation locks; LWLock:*, IO:*: PostgreSQL internals)",
        f"  commits {c.get('xact_commit', 0) * per_s:.0f}/s, rollbacks "
        f"{c.get('xact_rollback', 0):.0f}, WAL {c.get('wal_bytes', 0) * per_s / 1e6:.1f} MB/s, "
        f"cache hits {100 * hit_ratio:.2f}%, deadlocks {c.get('deadlocks', 0):.0f}",
        f"  checkpoints stored: {db.storage.get('rows', 0):.0f} rows, mean "
        f"{db.storage.get('mean_size', 0) / 1024:.0f} KiB, {db.storage.get('in_blobs', 0):.0f} "
        f"in S3; database {db.storage.get('db_bytes', 0) / 2**20:.0f} MiB",
        "  top statements by total execution time:",
        f"  {'calls':>8} {'total ms':>9} {'mean ms':>8} {'rows':>8}  statement",
    ]
    for s in db.statements:
        lines.append(
            f"  {s.calls:>8} {s.total_ms:>9.0f} {s.mean_ms:>8.3f} {s.rows:>8}  {s.query[:110]}"
        )
    return lines


def verdict(run: Run) -> str:
    """Which resource ran out first, from the measurements (thresholds are rules of thumb)."""
    text = _verdict(run)
    other = run.share("other")
    if other >= 0.3:
        text += f" [other processes used {other:.2f} cores: rerun on a quiet machine]"
    return text


def _verdict(run: Run) -> str:
    machine = run.share("machine") / run.cores
    locust = run.share("locust")
    replicas = run.share("replicas")
    other = run.share("other")
    if machine >= 0.85 and other >= 0.3:
        return (
            f"inconclusive: the CPUs were saturated and other processes used {other:.2f} "
            "cores of them"
        )
    if locust >= 0.9:
        return (
            f"the load generator saturates a core ({locust:.2f}): latencies include locust's "
            "own queueing; use fewer users or run locust elsewhere"
        )
    # One replica is one asyncio event loop: it cannot use much more than a core.
    per_process = replicas / max(run.server_processes, 1)
    # Reads and writes share the event loop, the proxy and the CPUs; if only writes are
    # slow, they are queueing for something only writes take: the database's write path.
    write = run.checkpoint_p50() or 0
    read = run.route_p(READ_ROUTE, "p50") or 0
    writes_queue = write >= 20 and write >= 5 * max(read, 1)
    db = run.database
    if db is None:
        if writes_queue:
            return (
                f"the database is the bottleneck: embedded SQLite has one writer, and writes "
                f"queue for it (checkpoint p50 {write} ms, GET stack p50 {read} ms in the same "
                f"process, which uses {replicas:.2f} cores)"
            )
        if per_process >= 0.8:
            return (
                f"CPU-bound in the server process ({replicas:.2f} cores): its event loop runs "
                "on one core, and embedded SQLite runs inside it, so the database's work is "
                "part of that number; more PROCELLA_WORKERS or the cluster come next"
            )
        if machine >= 0.85:
            return f"the machine's CPUs are saturated (server {replicas:.2f} cores)"
        return "nothing saturated yet: add users"
    executing = run.db_mean("active_time")
    pg = run.share("postgres")
    waits = db.activity.waits
    total_waits = sum(waits.values()) or 1
    locked = sum(n for w, n in waits.items() if w.startswith(("Lock", "LWLock"))) / total_waits
    io = sum(n for w, n in waits.items() if w.startswith("IO")) / total_waits
    if (
        pg >= 0.5 * run.cores
        or executing >= run.cores
        or locked >= 0.3
        or io >= 0.3
        or writes_queue
    ):
        return (
            f"the database is the bottleneck: PostgreSQL uses {pg:.2f} cores, "
            f"{executing:.2f} backends execute on average, lock waits {100 * locked:.0f}% "
            f"and I/O waits {100 * io:.0f}% of active samples, checkpoint p50 {write} ms vs "
            f"GET stack p50 {read} ms"
        )
    if machine >= 0.85 or per_process >= 0.8:
        return (
            f"the CPUs are saturated before the database is: replicas {replicas:.2f} cores vs "
            f"PostgreSQL {pg:.2f}; PostgreSQL executes {executing:.2f} statements at a time on "
            "average, so requests wait in the replicas' Python, not in the database"
            + _projection(run)
        )
    return (
        f"nothing saturated yet (machine {100 * machine:.0f}% busy, PostgreSQL executing "
        f"{executing:.2f} on average): add users"
    )


def _projection(run: Run) -> str:
    """Where PostgreSQL would run out, at this run's CPU cost per request."""
    requests = run.locust.total.requests
    pg_ms = run.cpu.get("postgres", 0.0) * 1000 / requests if requests else 0.0
    app_ms = run.cpu.get("replicas", 0.0) * 1000 / requests if requests else 0.0
    if pg_ms <= 0:
        return ""
    per_core = 1000 / pg_ms
    return (
        f"; at {pg_ms:.2f} ms of PostgreSQL CPU per request one PostgreSQL core carries "
        f"~{per_core:.0f} req/s of this mix, which needs ~{per_core * app_ms / 1000:.1f} "
        "cores of replicas"
    )


def comparison(runs: list[Run]) -> list[str]:
    """One line per run, to see where latency climbs as users grow ("-": no PostgreSQL)."""
    head = (
        f"{'topology':<8} {'code':<12} {'users':>5} {'req/s':>7} {'fail':>5} {'p50':>5} {'p95':>5} "
        f"{'p99':>6} {'ckpt p50':>8} {'get p50':>7} {'pg exec':>7} {'pg in-tx':>8} {'stmt/s':>7} "
        f"{'pg cpu':>6} {'app cpu':>7} {'app ms':>6} {'pg ms':>6} {'stmt/req':>8} "
        f"{'locust':>6} {'other':>5} {'busy':>5}"
    )
    lines = [head]
    for r in runs:
        t = r.locust.total
        ckpt = r.checkpoint_p50()
        get = r.route_p(READ_ROUTE, "p50")
        if r.database is not None and r.seconds:
            pg = (
                f"{r.db_mean('active_time'):>7.2f} {r.db_mean('idle_in_transaction_time'):>8.2f} "
                f"{r.database.calls / r.seconds:>7.0f} {r.share('postgres'):>6.2f}"
            )
        else:
            pg = f"{'-':>7} {'-':>8} {'-':>7} {'-':>6}"
        requests = max(t.requests, 1)
        app_ms = 1000 * r.cpu.get("replicas", 0.0) / requests
        pg_ms = f"{1000 * r.cpu['postgres'] / requests:>6.2f}" if "postgres" in r.cpu else "     -"
        statements = r.app.get("statements", 0.0) / requests
        lines.append(
            f"{r.topology:<8} {r.options.get('code', '')[:12]:<12} {r.users:>5} "
            f"{r.locust.rps:>7.1f} {t.failures:>5} {t.p50:>5} "
            f"{t.p95:>5} {t.p99:>6} {'-' if ckpt is None else ckpt:>8} "
            f"{'-' if get is None else get:>7} {pg} "
            f"{r.share('replicas'):>7.2f} {app_ms:>6.2f} {pg_ms} {statements:>8.1f} "
            f"{r.share('locust'):>6.2f} {r.share('other'):>5.2f} "
            f"{100 * r.share('machine') / r.cores:>4.0f}%"
        )
    return lines
