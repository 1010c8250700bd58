"""Benchmark: `pulumi up` of large stacks against Procella and against the CLI's DIY backends.

    python e2e/bench_up.py [--cases up-100,up-1000,change-1000] [--backends ...]
                           [--providers plain,secret] [--repeat 3] [--json out.json]

Starts every selected backend once, then runs the cases (`up` of N `bulk` resources of
programs/things on a fresh stack; `change-N`: a fresh N-resource stack, then the timed `up`
of generation 2, which changes 10 of them) R times, cycling through the backends so machine
noise hits all alike. Backends:

    embedded-journal|delta|full  `procella serve` (SQLite + local files)
    cluster-journal|delta|full   three replicas on PostgreSQL + S3 (moto) behind Caddy
    file                         the CLI's DIY backend on a folder (file://)
    postgres                     the CLI's DIY backend on PostgreSQL (postgres://)

journal: the CLI sends journal entries; delta: delta checkpoints (the server's default cutoff
unless --cutoff); full: whole checkpoints. Prints one line per run, then a markdown table of
medians with ratios against file://; --json writes every run. How each number is measured:
bench_measure.py and the benchmark section of e2e/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import bench_measure as measure

from procella_testing import pulumi_toolchain, servers
from procella_testing.cluster import Cluster
from procella_testing.procella_server import ProcellaServer, server_command
from procella_testing.processes import expect_ok, run_command
from procella_testing.pulumi_cli import PulumiCLI, make_project

REPO = Path(__file__).resolve().parent.parent
PROJECT = "bench"
ORG = "organization"
PASSPHRASE = {"PULUMI_CONFIG_PASSPHRASE": "benchmark"}
MODES = ("journal", "delta", "full")
BACKENDS = (
    *(f"embedded-{m}" for m in MODES),
    *(f"cluster-{m}" for m in MODES),
    "file",
    "postgres",
)
DEFAULT_CASES = "up-100,up-1000,change-1000"
DEFAULT_BACKENDS = "embedded-journal,embedded-delta,embedded-full,cluster-journal,file"
# Payload per resource when a case does not name one. A dynamic resource carries its pickled
# provider (about 6.6 KB) in its inputs and again in its outputs, and the payload likewise:
# 1 KB of payload makes about 17 KB of state per resource, the ~16 KB of the issue reports.
# Smaller is impossible with pulumi.dynamic (payload 0 is still about 13.5 KB).
DEFAULT_PAYLOAD = 1024
CHANGED = 10  # resources generation 2 of the bulk scenario changes (the program's default)


# --- what to run ------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    kind: str  # "up": a fresh stack; "change": generation 2 on an existing stack
    count: int
    payload: int

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.count}"

    @property
    def label(self) -> str:
        size = f"{self.payload // 1024} KB" if self.payload % 1024 == 0 else f"{self.payload} B"
        what = f"{CHANGED} of {self.count}" if self.kind == "change" else str(self.count)
        return f"{self.kind} {what} x {size}"


def parse_case(text: str) -> Case:
    """``up-1000`` or ``change-1000``, optionally ``:BYTES`` of payload per resource."""
    spec, _, payload = text.strip().partition(":")
    kind, _, count = spec.partition("-")
    if kind not in ("up", "change") or not count.isdigit() or int(count) < 1:
        raise argparse.ArgumentTypeError(f"bad case {text!r}: want up-N or change-N[:BYTES]")
    if kind == "change" and int(count) < CHANGED:
        raise argparse.ArgumentTypeError(f"change-N needs N >= {CHANGED}")
    return Case(kind, int(count), int(payload) if payload else DEFAULT_PAYLOAD)


@dataclass(frozen=True)
class Scenario:
    """The cases of one stack: its `up` (None: an untimed preparation) and its change."""

    count: int
    payload: int
    up: Case | None = None
    change: Case | None = None

    @property
    def cases(self) -> list[Case]:
        return [case for case in (self.up, self.change) if case is not None]


def comma_list(choices: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        bad = [item for item in items if item not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)}")
        return items

    return parse


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n", 1)[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument(
        "--cases",
        type=lambda text: [parse_case(part) for part in text.split(",")],
        default=[parse_case(part) for part in DEFAULT_CASES.split(",")],
        help=f"up-N / change-N[:payload bytes], comma-separated (default {DEFAULT_CASES};\n"
        f"payload {DEFAULT_PAYLOAD} B: about 17 KB of state per resource)",
    )
    p.add_argument(
        "--backends",
        type=comma_list(BACKENDS),
        default=DEFAULT_BACKENDS.split(","),
        help=f"comma-separated, of: {', '.join(BACKENDS)}\n(default {DEFAULT_BACKENDS})",
    )
    p.add_argument(
        "--providers",
        type=comma_list(("plain", "secret")),
        default=["plain"],
        help="the bulk scenario's plain_provider true (plain) and/or false (secret)",
    )
    p.add_argument(
        "--secret-up-to",
        type=int,
        default=100,
        metavar="N",
        help="the same for a secret provider: without journaling the CLI re-encrypts every\n"
        "provider at every step (default %(default)s)",
    )
    p.add_argument(
        "--whole-up-to",
        type=int,
        default=1000,
        metavar="N",
        help="cases above N resources only on journal backends: the others save the whole\n"
        "state at every step (default %(default)s)",
    )
    p.add_argument("--repeat", type=int, default=1, help="runs per case and backend")
    p.add_argument("--cutoff", type=int, help="delta mode's PROCELLA_DELTA_CHECKPOINT_CUTOFF_BYTES")
    p.add_argument(
        "--max-rss",
        type=float,
        default=round(total_memory() / 2**30 / 2, 1),
        metavar="GiB",
        help="kill a CLI whose process tree grows beyond this; the run is recorded as\n"
        "'OOM guard' (default: half the machine's memory, %(default)s GiB)",
    )
    p.add_argument("--timeout", type=float, default=3600, help="seconds per pulumi up")
    p.add_argument(
        "--wait-idle",
        type=float,
        default=0,
        metavar="S",
        help="before each measured up, wait up to S s for the machine's other load to drop\n"
        "below half a core (a shared machine); the 'other load' column shows what remained",
    )
    p.add_argument("--json", type=Path, help="write every run and the table's inputs here")
    p.add_argument(
        "--at",
        metavar="REV",
        action="append",
        help="serve procella/ as of this git revision (extracted with git archive), so\n"
        "edits in progress do not change what is measured; given more than once, every\n"
        "Procella backend runs at each revision (named backend@REV), alternating in one run",
    )
    p.add_argument("--keep", type=Path, help="work in this folder and keep it (logs, state)")
    p.add_argument(
        "--table-from",
        type=Path,
        metavar="JSON",
        help="print the table of a run saved with --json (one that was stopped, too) and exit",
    )
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    return args


def total_memory() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 8 * 2**30


# --- backends ---------------------------------------------------------------------------


Counters = dict[str, float]


@dataclass
class Backend:
    """A logged-in CLI plus how to read the backend's cumulative counters."""

    name: str
    cli: PulumiCLI
    trees: dict[str, list[int]]  # processes whose peak RSS is sampled: server, replica0..2
    counters: Callable[[], Counters]  # cumulative CPU seconds and database bytes
    blobs: Callable[[], dict[str, int]] | None = None  # the blob store's objects and sizes
    blob_poll: float = 0.2  # seconds between two listings of the blob store
    servers: list[ProcellaServer] = field(default_factory=list)  # for `procella gc`
    db_includes_blobs: bool = False  # db_bytes counts the blob writes too (subtract them)
    is_file: bool = False


class Services:
    """PostgreSQL and S3, started on first use and stopped by the ExitStack."""

    def __init__(self, stack: contextlib.ExitStack, work: Path) -> None:
        self._stack, self._work = stack, work
        self._pg: servers.PostgresServer | None = None
        self._s3: measure.MotoS3 | None = None

    @property
    def pg(self) -> servers.PostgresServer:
        if self._pg is None:
            self._pg = servers.PostgresServer.start()
            self._stack.callback(self._pg.stop)
        return self._pg

    @property
    def s3(self) -> measure.MotoS3:
        if self._s3 is None:
            os.environ.update(servers.AWS_TEST_ENV)  # boto3 in this process (bucket sizes)
            self._s3 = measure.MotoS3(self._work / "moto.log")
            self._stack.callback(self._s3.stop)
        return self._s3

    def pg_counters(self) -> Counters:
        procs = measure.scan()
        postmaster = measure.postmaster_pid(self.pg.root / "data")
        return {
            "pg_cpu": measure.tree_cpu(procs, [postmaster]),
            "db_bytes": float(measure.wal_position(self.pg.admin_url)),
        }


def start_backends(
    names: Sequence[str],
    args: argparse.Namespace,
    stack: contextlib.ExitStack,
    work: Path,
    toolchain: Path,
) -> list[Backend]:
    shared = Services(stack, work)
    backends = []
    for name in names:
        # Procella backends once per revision (servers take PYTHONPATH when built).
        revisions = args.revisions if name.startswith(("embedded-", "cluster-")) else [None]
        for revision in revisions or [None]:
            label = name if revision is None or len(args.revisions) < 2 else f"{name}@{revision[0]}"
            if revision is not None:
                os.environ["PYTHONPATH"] = str(revision[1])
            folder = work / label
            folder.mkdir()
            project = make_project("things", PROJECT, folder)
            if name.startswith("embedded-"):
                backend = start_embedded(name, args, stack, folder, project, toolchain)
            elif name.startswith("cluster-"):
                backend = start_cluster(name, args, stack, shared, folder, project, toolchain)
            else:
                backend = start_diy(name, shared, folder, project, toolchain)
            backend.name = label
            backend.cli.login()
            backends.append(backend)
            print(f"started {label}: {backend.cli.backend_url}", flush=True)
    return backends


def new_cli(toolchain: Path, folder: Path, project: Path, url: str, token: str | None) -> PulumiCLI:
    extra = PASSPHRASE if token is None else {}
    return PulumiCLI(
        toolchain, folder / "home", backend_url=url, token=token, cwd=project, extra_env=extra
    )


def start_embedded(
    name: str,
    args: argparse.Namespace,
    stack: contextlib.ExitStack,
    folder: Path,
    project: Path,
    toolchain: Path,
) -> Backend:
    mode = name.removeprefix("embedded-")
    server = ProcellaServer(folder / "data", mode=mode, cutoff_bytes=args.cutoff)
    stack.callback(server.stop)
    server.start()
    assert server.process is not None
    pid = server.process.pid

    def counters() -> Counters:
        # SQLite: what the server process wrote to storage less its own log; measure_up
        # subtracts the blob files.
        procs = measure.scan()
        written = measure.tree_write_bytes(procs, [pid])
        return {
            "server_cpu": measure.tree_cpu(procs, [pid]),
            "db_bytes": float(written - server.log_size()),
        }

    blob_dir = server.data_dir / "blobs"
    return Backend(
        name,
        new_cli(toolchain, folder, project, server.url, server.admin_token),
        {"server": [pid]},
        counters,
        blobs=lambda: measure.file_sizes(blob_dir),
        servers=[server],
        db_includes_blobs=True,
    )


def start_cluster(
    name: str,
    args: argparse.Namespace,
    stack: contextlib.ExitStack,
    shared: Services,
    folder: Path,
    project: Path,
    toolchain: Path,
) -> Backend:
    mode = name.removeprefix("cluster-")
    pg, s3 = shared.pg, shared.s3
    database = servers.create_database(pg.admin_url)
    bucket = servers.create_bucket(s3.endpoint)
    cluster = Cluster(
        folder / "cluster",
        database_url=pg.url(database),
        s3_endpoint=s3.endpoint,
        bucket=bucket,
        mode=mode,
    )
    for replica in cluster.replicas:
        serve_defaults(replica, args.cutoff)
    stack.callback(cluster.stop)
    cluster.start()
    pids = [r.process.pid for r in cluster.replicas if r.process is not None]
    caddy = cluster._caddy.pid if cluster._caddy is not None else 0

    def counters() -> Counters:
        procs = measure.scan()
        values = shared.pg_counters()
        values["server_cpu"] = measure.tree_cpu(procs, pids)
        values["proxy_cpu"] = measure.tree_cpu(procs, [caddy])
        values["s3_cpu"] = measure.tree_cpu(procs, [s3.process.pid])
        return values

    return Backend(
        name,
        new_cli(toolchain, folder, project, cluster.url, cluster.admin_token),
        {f"replica{i}": [pid] for i, pid in enumerate(pids)},
        counters,
        # Listing costs moto CPU (in s3_cpu): twice a second is enough to see every blob.
        blobs=lambda: measure.bucket_sizes(s3.endpoint, bucket),
        blob_poll=0.5,
        servers=cluster.replicas[:1],
    )


def serve_defaults(replica: ProcellaServer, cutoff: int | None) -> None:
    """Cluster() sets what the e2e tests want: delta cutoff 0 and a 4 KB inline limit (so
    small test checkpoints reach S3). The benchmark measures the server's defaults (1 MB
    inline, the default cutoff or --cutoff) like the embedded servers, so undo both before
    start. ProcellaServer rebuilds its environment from these two on every port change."""
    replica._cutoff_bytes = cutoff
    replica._extra_env.pop("PROCELLA_CHECKPOINT_INLINE_MAX_BYTES", None)
    replica._use_port(replica.port)


def start_diy(name: str, shared: Services, folder: Path, project: Path, toolchain: Path) -> Backend:
    if name == "file":
        state = folder / "state"
        state.mkdir()
        cli = new_cli(toolchain, folder, project, f"file://{state}", None)
        return Backend(name, cli, {}, dict, is_file=True)
    pg = shared.pg
    database = servers.create_database(pg.admin_url)
    # The CLI's PostgreSQL DIY backend (pkg/backend/diy/postgres): one table of blobs.
    url = f"postgres://postgres@127.0.0.1:{pg.port}/{database}?sslmode=disable"
    cli = new_cli(toolchain, folder, project, url, None)
    return Backend(name, cli, {}, shared.pg_counters)


# --- one run ----------------------------------------------------------------------------


@dataclass
class Run:
    case: str
    label: str
    count: int
    payload: int
    provider: str
    backend: str
    repeat: int
    stack: str = ""
    status: str = "ok"
    wall: float = 0.0
    cli_cpu: float = 0.0
    cli_rss: int = 0  # peak of the sum over the CLI's session (CLI, host, program, providers)
    cli_max_rss_single: int = 0
    cli_write_bytes: int = 0
    server_cpu: float = 0.0
    server_rss: dict[str, int] = field(default_factory=dict)  # peak per replica
    server_rss_start: dict[str, int] = field(default_factory=dict)  # at the run's start
    proxy_cpu: float = 0.0
    pg_cpu: float = 0.0
    s3_cpu: float = 0.0
    db_bytes: float = 0.0
    blob_bytes: float = 0.0
    blob_objects: int = 0  # blobs written (every one a new key)
    state_bytes: int = 0  # the stack's final state, as `pulumi stack export` writes it
    other_cpu: float = 0.0  # machine CPU the run's processes do not account for
    idle_wait: float = 0.0  # seconds waited for other load to stop (--wait-idle)
    error: str = ""

    @property
    def all_cpu(self) -> float:
        return self.cli_cpu + self.server_cpu + self.proxy_cpu + self.pg_cpu + self.s3_cpu


def create_stack(backend: Backend, scenario: Scenario, provider: str, name: str) -> None:
    """A fresh stack with the bulk scenario's config."""
    cli, cwd = backend.cli, backend.cli.cwd
    cli.ok("stack", "init", name, cwd=cwd)
    settings = {
        "scenario": "bulk",
        "count": str(scenario.count),
        "payload_bytes": str(scenario.payload),
        "plain_provider": "true" if provider == "plain" else "false",
    }
    pairs = [arg for key, value in settings.items() for arg in ("--plaintext", f"{key}={value}")]
    cli.ok("config", "set-all", *pairs, "--stack", name, cwd=cwd)


def measure_up(backend: Backend, run: Run, args: argparse.Namespace, logs: Path) -> None:
    cli = backend.cli
    argv = [cli.executable, *cli.debug_flags, "up", "--yes", "--skip-preview", "--stack", run.stack]
    if args.wait_idle > 0:
        run.idle_wait = measure.wait_for_quiet(args.wait_idle)
    blobs = measure.NewObjects(backend.blobs, backend.blob_poll).start() if backend.blobs else None
    before = backend.counters()
    busy = measure.machine_busy()
    result = measure.run_measured(
        argv,
        cwd=cli.cwd,
        env=cli.env,
        log_dir=logs,
        timeout=args.timeout,
        max_rss=int(args.max_rss * 2**30),
        trees=backend.trees,
    )
    busy = measure.machine_busy() - busy
    after = backend.counters()
    if blobs is not None:
        run.blob_bytes, run.blob_objects = float(blobs.stop().bytes), len(blobs.seen)
    delta = {key: after[key] - before.get(key, 0.0) for key in after}
    run.status, run.error = result.status, result.stderr_tail
    run.wall, run.cli_cpu, run.cli_rss = result.wall, result.cpu, result.rss_peak
    run.cli_max_rss_single, run.cli_write_bytes = result.max_rss_single, result.write_bytes
    run.server_rss, run.server_rss_start = result.server_peaks, result.server_starts
    for key in ("server_cpu", "proxy_cpu", "pg_cpu", "s3_cpu"):
        setattr(run, key, delta.get(key, 0.0))
    db = delta.get("db_bytes", 0.0) - (run.blob_bytes if backend.db_includes_blobs else 0.0)
    run.db_bytes = max(db, 0.0)
    if backend.is_file:  # the state files are the CLI's own writes
        run.blob_bytes = float(result.write_bytes)
    run.other_cpu = max(busy - run.all_cpu, 0.0)


def state_size(backend: Backend, stack: str, logs: Path) -> int:
    """Bytes of the stack's state after the run (what a whole checkpoint would carry)."""
    path = logs / "export.json"
    result = backend.cli.run("stack", "export", "--file", str(path), "--stack", stack)
    size = path.stat().st_size if result.rc == 0 and path.exists() else 0
    path.unlink(missing_ok=True)
    if not size:  # the table then shows 0.0 MB: say why, with the CLI's own words
        print(f"    export of {stack} failed:\n{result.describe()[-2000:]}", flush=True)
    return size


def clean_up(backend: Backend, stack: str, *, ok: bool) -> None:
    """Drop the stack, then collect its checkpoint blobs at once (the server's GC waits an
    hour), so a long benchmark does not fill the disk. Untimed; failures only logged."""
    cli = backend.cli
    if backend.servers and not ok:
        cli.run("cancel", "--yes", "--stack", stack)  # an update the guard or timeout killed
    removed = cli.run("stack", "rm", "--yes", "--force", "--stack", stack)
    if removed.rc != 0:
        print(f"  (could not remove {stack}: {removed.stderr.strip()[-200:]})", flush=True)
    for server in backend.servers:
        env = {**server.env, "PROCELLA_GC_BLOB_GRACE_SECONDS": "0"}
        gc = run_command(
            [*server_command(), "gc", "--once"], cwd=server.data_dir, env=env, timeout=600
        )
        if gc.rc != 0:
            print(f"  (procella gc failed: {gc.output.strip()[-200:]})", flush=True)


def run_scenario(
    backend: Backend,
    scenario: Scenario,
    provider: str,
    rep: int,
    args: argparse.Namespace,
    logs: Path,
) -> Iterator[Run]:
    """On one fresh stack: the `up` of N resources (timed if it is a case, else only the
    preparation of the change), then generation 2, which changes 10 of them (timed)."""
    name = f"{ORG}/{PROJECT}/n{scenario.count}-{provider}-r{rep}"
    cli = backend.cli
    runs: list[Run] = []
    try:
        create_stack(backend, scenario, provider, name)
        if scenario.up is None:
            argv = ("up", "--yes", "--skip-preview", "--stack", name)
            expect_ok(cli.run(*argv, timeout=args.timeout))
        for case in (scenario.up, scenario.change):
            if case is None:
                continue
            if case.kind == "change":
                cli.ok("config", "set", "generation", "2", "--stack", name)
            run = Run(case.name, case.label, case.count, case.payload, provider, backend.name, rep)
            run.stack = name
            runs.append(run)
            measure_up(backend, run, args, logs)
            yield run
            if run.status != "ok":
                break
    except AssertionError as exc:  # a CLI command around the measured ones failed
        case = scenario.cases[len(runs)] if len(runs) < len(scenario.cases) else scenario.cases[-1]
        failed = Run(case.name, case.label, case.count, case.payload, provider, backend.name, rep)
        failed.stack, failed.status, failed.error = name, "failed", str(exc)[-3000:]
        runs.append(failed)
        yield failed
    finally:
        state = state_size(backend, name, logs) if runs and runs[-1].status == "ok" else 0
        for run in runs:
            run.state_bytes = state if run.status == "ok" else 0
        clean_up(backend, name, ok=bool(runs) and runs[-1].status == "ok")


# --- output -----------------------------------------------------------------------------


def mb(value: float) -> str:
    return f"{value / measure.MB:.1f}"


def describe(run: Run, index: int, total: int) -> str:
    server_rss = max(run.server_rss.values(), default=0)
    line = (
        f"[{index:>3}/{total}] {run.case:<12} {run.provider:<6} {run.backend:<17} "
        f"{run.status:<9} wall {run.wall:7.1f} s | cli {run.cli_cpu:6.1f} s {mb(run.cli_rss):>7} MB"
        f" | server {run.server_cpu:6.1f} s {mb(server_rss):>6} MB | pg {run.pg_cpu:5.1f} s"
        f" | db {mb(run.db_bytes):>8} MB, blobs {mb(run.blob_bytes):>8} MB"
        f" | other load {run.other_cpu / max(run.wall, 1e-9):.2f} cores"
    )
    if run.status != "ok":
        line += "\n    " + run.error.strip().replace("\n", "\n    ")[-1200:]
    return line


TABLE_HEADER = (
    "| case | provider | backend | runs | wall s | vs file | CLI CPU s | CLI RSS MB | "
    "server CPU s | server RSS MB | PG CPU s | all CPU s | DB MB | blobs MB | state MB | "
    "other load |"
)


def table(runs: Sequence[Run], skipped: Sequence[tuple[str, str, str]]) -> list[str]:
    """Medians of the successful runs per case x provider x backend; the combinations left
    out by --whole-up-to / --secret-up-to in their place."""
    groups: dict[tuple[str, str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.label, run.provider, run.backend), []).append(run)
    for key in skipped:
        groups.setdefault(key, [])
    # Case, then provider, in order of first appearance; backends in run order within.
    first: dict[tuple[str, str], int] = {}
    for label, provider, _ in groups:
        first.setdefault((label, provider), len(first))
    lines = [TABLE_HEADER, "|" + "---|" * TABLE_HEADER.count(" | ") + "---|"]
    for key in sorted(groups, key=lambda k: first[k[0], k[1]]):
        label, provider, backend = key
        if not groups[key]:
            lines.append(f"| {label} | {provider} | {backend} | not run (--whole/secret-up-to) |")
            continue
        file_runs = [r for r in groups.get((label, provider, "file"), []) if r.status == "ok"]
        lines.append(row(label, provider, backend, groups[key], file_runs))
    return lines


def row(label: str, provider: str, backend: str, group: list[Run], file_runs: list[Run]) -> str:
    ok = [r for r in group if r.status == "ok"]
    failures = sorted({r.status for r in group if r.status != "ok"})
    runs = f"{len(ok)}/{len(group)}" + (f" ({', '.join(failures)})" if failures else "")
    if not ok:
        return f"| {label} | {provider} | {backend} | {runs} |" + " |" * 12

    def med(get: Callable[[Run], float]) -> float:
        return statistics.median(get(r) for r in ok)

    wall = med(lambda r: r.wall)
    ratio = f"{wall / statistics.median(r.wall for r in file_runs):.2f}" if file_runs else "-"
    cells = [
        f"{wall:.1f}",
        ratio,
        f"{med(lambda r: r.cli_cpu):.1f}",
        f"{med(lambda r: r.cli_rss) / measure.MB:.0f}",
        f"{med(lambda r: r.server_cpu):.1f}" if backend not in ("file", "postgres") else "-",
        server_rss_cell(ok),
        f"{med(lambda r: r.pg_cpu):.1f}" if uses_postgres(backend) else "-",
        f"{med(lambda r: r.all_cpu):.1f}",
        mb(med(lambda r: r.db_bytes)) if backend != "file" else "-",
        mb(med(lambda r: r.blob_bytes)) if backend != "postgres" else "-",
        mb(med(lambda r: r.state_bytes)),
        f"{med(lambda r: r.other_cpu / r.wall):.2f}",
    ]
    return f"| {label} | {provider} | {backend} | {runs} | " + " | ".join(cells) + " |"


def server_rss_cell(ok: list[Run]) -> str:
    """Median of the largest replica's peak (one server: its peak)."""
    peaks = [max(r.server_rss.values()) for r in ok if r.server_rss]
    return f"{statistics.median(peaks) / measure.MB:.0f}" if peaks else "-"


def uses_postgres(backend: str) -> bool:
    return backend.startswith("cluster-") or backend == "postgres"


def long_runs(runs: Sequence[Run]) -> list[str]:
    """Updates that outlived the 5-minute lease: the CLI had to renew it (every ~2.5 min)."""
    notes = []
    for run in runs:
        if run.wall > 300 and not run.backend.startswith(("file", "postgres")):
            outcome = "completed" if run.status == "ok" else f"did not complete ({run.status})"
            notes.append(
                f"- {run.label}, {run.provider}, {run.backend}: {run.wall:.0f} s, {outcome} "
                "(longer than the 5-minute lease, so the CLI renewed it)"
            )
    return notes


# --- the whole benchmark ----------------------------------------------------------------


def git(*argv: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), *argv], capture_output=True, text=True, check=True
    ).stdout.strip()


def code_version(at: Sequence[str] | None) -> str:
    if at:
        return ", ".join(f"{git('rev-parse', '--short', f'{a}^{{commit}}')} (--at {a})" for a in at)
    dirty = git("status", "--porcelain", "--", "procella")
    return git("rev-parse", "--short", "HEAD") + (" with uncommitted changes" if dirty else "")


def checkout(rev: str, into: Path) -> tuple[str, Path]:
    """Extract procella/ at ``rev`` into ``into``; PYTHONPATH then puts it before the editable
    install in the servers started with it (this process never imports procella). Returns
    the revision's short hash and the folder."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev, "procella"], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    os.environ["PYTHONPATH"] = str(into)
    return git("rev-parse", "--short", f"{rev}^{{commit}}"), into


def scenarios(cases: Sequence[Case]) -> list[Scenario]:
    """Cases that can share a stack, in the order given: `up-N` and `change-N` of the same
    payload run on one stack (the change needs an N-resource stack anyway)."""
    found: dict[tuple[int, int], Scenario] = {}
    for case in cases:
        key = (case.count, case.payload)
        old = found.get(key, Scenario(case.count, case.payload))
        found[key] = replace(old, up=case) if case.kind == "up" else replace(old, change=case)
    return list(found.values())


def skip(scenario: Scenario, provider: str, backend: str, args: argparse.Namespace) -> bool:
    """Without journaling the CLI serializes the whole state at every step (and sends it,
    or a delta of it, or writes it), so a run costs O(N^2): 1000 resources take about ten
    minutes here, 5000 would take hours. With a secret provider it also re-encrypts every
    provider at every step, which large stacks do not survive (the memory guard ends them)."""
    if "journal" in backend:
        return False
    limit: int = args.secret_up_to if provider == "secret" else args.whole_up_to
    return scenario.count > limit


def benchmark(args: argparse.Namespace, work: Path) -> int:
    toolchain = pulumi_toolchain.ensure_toolchain(verbose=True)
    plan = [(s, p) for s in scenarios(args.cases) for p in args.providers]
    skipped = [
        (case.label, provider, name)
        for scenario, provider in plan
        for name in args.backends
        if skip(scenario, provider, name, args)
        for case in scenario.cases
    ]
    runs: list[Run] = []
    with contextlib.ExitStack() as stack:
        backends = start_backends(args.backends, args, stack, work, toolchain)
        total = args.repeat * sum(
            len(scenario.cases)
            for scenario, provider in plan
            for backend in backends
            if not skip(scenario, provider, backend.name, args)
        )
        for rep in range(1, args.repeat + 1):
            # Rotate the order every repetition: no backend always runs first or last.
            shift = (rep - 1) % len(backends)
            for scenario, provider in plan:
                for backend in backends[shift:] + backends[:shift]:
                    if skip(scenario, provider, backend.name, args):
                        continue
                    for run in run_scenario(backend, scenario, provider, rep, args, work / "logs"):
                        runs.append(run)
                        print(describe(run, len(runs), total), flush=True)
                        save(args, runs)
    report(args, runs, skipped)
    return 0 if all(r.status == "ok" for r in runs) else 1


def save(args: argparse.Namespace, runs: Sequence[Run]) -> None:
    """Rewritten after every run, so an interrupted benchmark keeps what it measured."""
    if args.json is None:
        return
    meta = {
        "code": args.code,
        "machine": f"{os.cpu_count()} cores, {total_memory() / 2**30:.0f} GiB, "
        f"{platform.platform()}",
        "cli": pulumi_toolchain.DEFAULT_CLI_VERSION,
        "argv": sys.argv[1:],
        "cutoff": args.cutoff,
    }
    data = {"meta": meta, "runs": [{**asdict(r), "all_cpu": r.all_cpu} for r in runs]}
    args.json.write_text(json.dumps(data, indent=2) + "\n")


def report(args: argparse.Namespace, runs: Sequence[Run], skipped: Sequence[Any]) -> None:
    print(
        f"\n`pulumi up` (CLI v{pulumi_toolchain.DEFAULT_CLI_VERSION}), Procella {args.code}, "
        f"{os.cpu_count()} cores; medians of {args.repeat} run(s)\n"
    )
    print("\n".join(table(runs, skipped)))
    notes = long_runs(runs)
    if notes:
        print("\n" + "\n".join(notes))


@contextlib.contextmanager
def workspace(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="procella-bench-") as work:
        yield Path(work)


def _exit_on_signal(signum: int, _frame: object) -> None:
    # SystemExit unwinds the stack: every finally and ExitStack stops what it started.
    sys.exit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.table_from is not None:
        saved = json.loads(args.table_from.read_text())
        fields = {f.name for f in dataclasses.fields(Run)}
        runs = [Run(**{k: v for k, v in r.items() if k in fields}) for r in saved["runs"]]
        print(f"Procella {saved['meta']['code']}, CLI v{saved['meta']['cli']}\n")
        print("\n".join(table(runs, [])))
        return 0
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit_on_signal)
    with workspace(args.keep) as work:
        args.revisions = [checkout(rev, work / f"code-{i}") for i, rev in enumerate(args.at or [])]
        args.code = code_version(args.at)
        started = time.monotonic()
        rc = benchmark(args, work)
        print(f"\nbenchmark took {(time.monotonic() - started) / 60:.1f} min")
        return rc


if __name__ == "__main__":
    sys.exit(main())
