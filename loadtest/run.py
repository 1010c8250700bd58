"""Load Procella with Locust on this machine and report where the database becomes the
bottleneck.

    /root/.cache/procella/devvenv/bin/python loadtest/run.py [--topology both] [--users 5,20,50]

For each user count: start a fresh topology (``single``: one ``procella serve`` on SQLite;
``cluster``: three replicas behind Caddy on PostgreSQL + S3), run ``locust --headless``
from the load venv against it (locust never runs in this process: its gevent patching
breaks asyncio code), sample PostgreSQL while it runs, stop everything, print a summary:
requests/s, failures, p50/p95/p99 per route, CPU per component, and for the cluster the
top pg_stat_statements entries and PostgreSQL's own view of saturation. A table compares
the user counts at the end. Results (locust's files, summary.json) go to --out.

Run it with the dev venv's Python (the topology helpers need psycopg and moto); the
standard library is all this file and its siblings import besides those helpers.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import appmetrics
import locustrun
import pgstats
import report
import topology
from summary import Database, Run, comparison, describe

from procella_testing import cpu

REPO = Path(__file__).resolve().parent.parent
DEFAULT_LOCUST = Path.home() / ".cache" / "procella" / "loadvenv" / "bin" / "locust"
USER_CLASSES = ("DeployUser", "ReadUser", "PreviewUser", "SecretsUser")
IDLE_CORES = 0.2  # busier than this before a run: someone else is using the machine


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--topology", choices=("single", "cluster", "both"), default="both")
    p.add_argument("-u", "--users", default="5,20,50", help="user counts, comma-separated")
    p.add_argument("-r", "--spawn-rate", type=float, help="users started per second (u/5)")
    p.add_argument("-t", "--run-time", type=int, default=60, help="seconds per user count")
    p.add_argument("--resources", type=int, default=50, help="LOAD_RESOURCES: state size")
    p.add_argument("--checkpoints", type=int, default=10, help="LOAD_CHECKPOINTS per update")
    p.add_argument("--delta", choices=("auto", "on", "off"), default="auto", help="LOAD_DELTA")
    p.add_argument("--wait", type=float, default=1.0, help="LOAD_WAIT: max s between tasks")
    p.add_argument("--classes", default="", help=f"subset of {','.join(USER_CLASSES)}")
    p.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra PROCELLA_* setting for the servers, e.g. PROCELLA_DATABASE_POOL_MAX_SIZE=20",
    )
    p.add_argument(
        "--locust", type=Path, default=Path(os.environ.get("PROCELLA_LOCUST", DEFAULT_LOCUST))
    )
    p.add_argument(
        "--at",
        metavar="REV",
        action="append",
        default=[],
        help="serve the procella package of this git revision (default: the working tree); "
        "given more than once, every run is made with each revision in turn",
    )
    p.add_argument("--out", type=Path, help="folder for results (default: a new temp folder)")
    p.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="S",
        help="before each run, wait up to S seconds for other work on the machine to stop",
    )
    p.add_argument("--top", type=int, default=12, help="pg_stat_statements entries to print")
    p.add_argument("--sample-interval", type=float, default=0.5, help="pg_stat_activity, s")
    args = p.parse_args(argv)
    try:
        args.user_counts = [int(u) for u in args.users.split(",") if u.strip()]
    except ValueError:
        p.error("--users takes integers, e.g. 5,20,50")
    if not args.user_counts or min(args.user_counts) < 1 or args.run_time < 5:
        p.error("need at least one user count >= 1 and --run-time >= 5")
    args.class_names = [c for c in args.classes.replace(",", " ").split() if c]
    if unknown := set(args.class_names) - set(USER_CLASSES):
        p.error(f"unknown user classes: {', '.join(sorted(unknown))}")
    env = dict(kv.split("=", 1) for kv in args.server_env if "=" in kv)
    if len(env) != len(args.server_env) or not all(k.startswith("PROCELLA_") for k in env):
        p.error("--server-env takes PROCELLA_NAME=value")
    args.env = env
    if not args.locust.exists():
        p.error(
            f"locust not found at {args.locust}: python3 -m venv ~/.cache/procella/loadvenv && "
            "~/.cache/procella/loadvenv/bin/pip install locust (or set --locust)"
        )
    return args


# One run ---------------------------------------------------------------------------------


def locust_plan(args: argparse.Namespace, users: int, token: str) -> locustrun.Plan:
    load_env = {
        "LOAD_TOKEN": token,
        "LOAD_ORG": "organization",  # the administrator's organization (the default)
        "LOAD_RESOURCES": str(args.resources),
        "LOAD_CHECKPOINTS": str(args.checkpoints),
        "LOAD_DELTA": args.delta,
        "LOAD_WAIT": str(args.wait),
    }
    rate = args.spawn_rate or max(1.0, users / 5)
    return locustrun.Plan(args.locust, users, rate, args.run_time, load_env, args.class_names)


def component_roots(running: topology.Running) -> dict[str, list[int]]:
    roots: dict[str, list[int]] = {"replicas": running.replica_pids}
    if running.postgres is not None:
        roots["postgres"] = [running.postgres.postmaster_pid]
    if running.kind == "cluster":
        roots.update(cpu.children_by_command(os.getpid(), {"caddy": "caddy"}))
    return roots


def background_cores(seconds: float = 2.0) -> float:
    """Cores busy before we start anything: another job on the machine skews every number."""
    busy, _ = cpu.machine_seconds()
    time.sleep(seconds)
    return (cpu.machine_seconds()[0] - busy) / seconds


def wait_for_quiet(limit: float) -> float:
    """Wait up to ``limit`` seconds for the machine to go idle; returns the last reading."""
    deadline = time.monotonic() + limit
    busy = background_cores()
    while busy > IDLE_CORES and time.monotonic() < deadline:
        print(f"-- machine busy ({busy:.2f} cores): waiting for it to go idle", flush=True)
        time.sleep(5)
        busy = background_cores()
    return busy


def run_once(args: argparse.Namespace, kind: str, users: int, out: Path) -> Run:
    out.mkdir(parents=True, exist_ok=True)
    idle_check = wait_for_quiet(args.wait_idle)
    root = Path(tempfile.mkdtemp(prefix="procella-load-"))
    print(f"-- {kind}, {users} users: starting servers in {root}", flush=True)
    try:
        run = _measure(args, kind, users, out, root)
    finally:
        _keep_logs(root, out / "server-logs")
        # PostgreSQL's files belong to the postgres user; as root, rmtree removes them.
        shutil.rmtree(root, ignore_errors=True)
    if idle_check > IDLE_CORES:
        run.notes.append(
            f"the machine was not idle before the run ({idle_check:.2f} cores busy): other "
            "processes share the CPUs, see 'other' above"
        )
    return run


def _keep_logs(root: Path, into: Path) -> None:
    """The replicas' and Caddy's logs outlive the temp folder, for a failed run's why."""
    for log in root.rglob("*.log"):
        into.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            shutil.copy(log, into / "-".join(log.relative_to(root).parts))


def _measure(args: argparse.Namespace, kind: str, users: int, out: Path, root: Path) -> Run:
    with topology.start(kind, root, args.env) as running:
        psql = None
        if running.postgres is not None:
            psql = pgstats.Psql(
                running.postgres.psql, running.postgres.server.port, running.postgres.database
            )
            settings = pgstats.prepare(psql)
            pgstats.reset(psql)
            before = pgstats.counters(psql)
        roots = component_roots(running)
        app_before = appmetrics.scrape(running.replica_urls)
        cpu_before = cpu.component_seconds(roots)
        machine_before = cpu.machine_seconds()[0]
        irq_before = cpu.interrupt_seconds()
        own_before = cpu.own_seconds() + _children_seconds()
        sampler = None
        if psql is not None:
            budget = args.run_time + users + locustrun.SETTLE_SECONDS
            sampler = pgstats.Sampler(psql, interval=args.sample_interval, max_seconds=budget)
            sampler.start()
        print(f"-- locust: {users} users for {args.run_time} s against {running.url}", flush=True)
        try:
            outcome = locustrun.run(locust_plan(args, users, running.admin_token), running.url, out)
        finally:
            activity = sampler.stop() if sampler is not None else None
        seconds = dict(cpu.component_seconds(roots))
        app = appmetrics.delta(app_before, appmetrics.scrape(running.replica_urls))
        used = {name: seconds[name] - cpu_before.get(name, 0.0) for name in seconds}
        used["locust"] = outcome.cpu_seconds
        own = cpu.own_seconds() + _children_seconds() - own_before - outcome.cpu_seconds
        used["driver"] = own  # this process: moto S3 thread, psql samples
        machine = cpu.machine_seconds()[0] - machine_before
        used["softirq"] = cpu.interrupt_seconds() - irq_before  # loopback networking, mostly
        used["other"] = max(machine - sum(used.values()), 0.0)  # other processes
        used["machine"] = machine
        database = None
        if psql is not None and activity is not None:
            statements, calls, exec_ms = pgstats.top_statements(psql, args.top)
            running.stop_replicas()  # backends publish their counters when they close
            pgstats.flush_stats(psql)
            after = pgstats.counters(psql)
            database = Database(
                settings=settings,
                counters={k: after[k] - before.get(k, 0.0) for k in after},
                activity=activity,
                statements=statements,
                calls=calls,
                exec_ms=exec_ms,
                storage=pgstats.checkpoint_storage(psql),
            )
    result = report.load(out / "locust.json")
    run = Run(
        topology=kind,
        users=users,
        seconds=outcome.wall_seconds,
        options=_options(args),
        locust=result,
        locust_exit=outcome.exit_code,
        failures=report.failures(out / "locust_failures.csv"),
        cpu=used,
        cores=os.cpu_count() or 1,
        database=database,
        server_processes=len(running.replica_pids),
        app=app,
    )
    if database is not None and database.settings.get("fsync") == "off":
        commits = database.counters.get("xact_commit", 0.0) / max(outcome.wall_seconds, 1.0)
        run.notes.append(
            f"fsync is off on this test server: {commits:.0f} commits/s paid no WAL flush "
            "(pg_test_fsync: ~0.1 ms per fdatasync on this disk)"
        )
    return run


def _children_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _options(args: argparse.Namespace) -> dict[str, str]:
    options = {
        "LOAD_RESOURCES": str(args.resources),
        "LOAD_CHECKPOINTS": str(args.checkpoints),
        "LOAD_DELTA": args.delta,
        "LOAD_WAIT": f"{args.wait:g}",
    }
    if args.class_names:
        options["classes"] = ",".join(args.class_names)
    options.update({k: v for k, v in args.env.items() if k.startswith("PROCELLA_")})
    options["code"] = args.code
    return options


def checkout(rev: str, into: Path) -> str:
    """Extract ``procella/`` at ``rev`` into ``into`` (read-only use of the repository), so
    the servers measure one fixed commit while the working tree keeps changing."""
    repo = str(REPO)
    sha = subprocess.run(
        ["git", "-C", repo, "rev-parse", "--verify", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    archive = subprocess.run(
        ["git", "-C", repo, "archive", sha, "procella"], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return sha


def _exit_on_signal(signum: int, frame: object) -> None:
    # SystemExit unwinds the stack, so every finally and ExitStack stops what it started.
    sys.exit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit_on_signal)
    out = args.out or Path(tempfile.mkdtemp(prefix="procella-loadtest-"))
    code = Path(tempfile.mkdtemp(prefix="procella-load-code-"))
    try:
        # (label, PYTHONPATH): each revision's procella/ outranks the editable install,
        # since the servers run in their data folders (this process never imports it).
        args.revisions = [("working tree", None)]
        if args.at:
            args.revisions = []
            for n, rev in enumerate(args.at):
                sha = checkout(rev, code / str(n))
                args.revisions.append((sha[:12], str(code / str(n))))
        return _run_all(args, out)
    finally:
        shutil.rmtree(code, ignore_errors=True)


def _run_all(args: argparse.Namespace, out: Path) -> int:
    kinds = ["single", "cluster"] if args.topology == "both" else [args.topology]
    runs: list[Run] = []
    for kind in kinds:
        for users in args.user_counts:
            # Revisions alternate within a user count, so drift on the machine hits all.
            for n, (label, path) in enumerate(args.revisions):
                args.code = label
                args.env.pop("PYTHONPATH", None)
                if path is not None:
                    args.env["PYTHONPATH"] = path
                folder = f"{kind}-u{users}" + (f"-r{n}" if len(args.revisions) > 1 else "")
                run = run_once(args, kind, users, out / folder)
                runs.append(run)
                print("\n".join(describe(run)), flush=True)
                print(flush=True)
    if len(runs) > 1:
        print("\n".join(comparison(runs)))
    summary_path = out / "summary.json"
    summary_path.write_text(json.dumps([r.to_json() for r in runs], indent=2, default=str))
    print(f"\nresults: {out}")
    # Like locust: a run with failures exits 1, so a CI session notices.
    return 1 if any(r.locust.total.failures for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
