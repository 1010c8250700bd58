"""What bench_up.py measures, and how: /proc, wait4, PostgreSQL's WAL position, S3 listings.

* ``scan`` reads /proc once: parent, session, CPU and RSS of every process. A *tree* is a
  set of root processes and their live descendants; its CPU is what the members used plus
  what the roots' exited children used (a PostgreSQL backend that came and went is reaped
  by the postmaster, a hypercorn worker by its parent).
* ``run_measured`` runs the CLI in a session of its own. Its CPU time and the bytes it wrote
  to files come from ``os.wait4``: the rusage of the CLI together with every descendant it
  waited for (language host, program, provider processes). Its peak RSS is sampled: the sum
  over the session's processes, every ``interval`` seconds, which is also where the memory
  guard looks (above ``max_rss`` the whole session is killed, so a run that would exhaust
  the machine's memory is recorded as "OOM guard" instead).
* ``PeakSampler`` keeps the largest RSS of other trees (each server replica) during a run.
* ``MotoS3`` is moto's S3 server as a child process (not the in-process thread of
  procella_testing/servers.py), so its CPU is measured apart from this process's samplers.

Linux only. Standard library only, apart from psycopg and boto3 in the helpers that talk to
PostgreSQL and S3.
"""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from procella_testing.cpu import Proc, descendants, machine_seconds, scan, tree_cpu
from procella_testing.processes import free_port, kill_session, poll, stop_group

__all__ = ["Proc", "scan", "tree_cpu"]  # bench_up.py reads the process table through here

MB = 1024 * 1024


# --- /proc: the process table is procella_testing/cpu.py's ----------------------


def tree_rss(procs: Mapping[int, Proc], roots: Sequence[int]) -> int:
    return sum(procs[p].rss for p in descendants(procs, roots))


def session_rss(procs: Mapping[int, Proc], sid: int) -> int:
    """The CLI's session: its language host and providers run in process groups of their own
    but stay in its session (processes.kill_session relies on the same)."""
    return sum(proc.rss for proc in procs.values() if proc.sid == sid)


def tree_write_bytes(procs: Mapping[int, Proc], roots: Sequence[int]) -> int:
    """Bytes the tree's live processes caused to be written to storage (/proc/<pid>/io
    write_bytes: counted when a page is dirtied, so a page rewritten before writeback counts
    once; tmpfs counts nothing)."""
    total = 0
    for pid in descendants(procs, roots):
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{pid}/io").read_text().splitlines():
                if line.startswith("write_bytes:"):
                    total += int(line.split()[1])
    return total


def machine_busy() -> float:
    """Busy CPU seconds of the whole machine since boot, all cores (/proc/stat). Over a run,
    what the run's own processes do not account for is load from elsewhere: other work on
    a shared machine, this process's samplers, softirq time of loopback traffic."""
    return machine_seconds()[0]


def wait_for_quiet(max_wait: float, *, cores: float = 0.5, window: float = 3.0) -> float:
    """On a shared machine: wait until the machine's busy CPU over ``window`` seconds drops
    below ``cores`` (other work between two of its steps), at most ``max_wait`` seconds.
    Returns the seconds waited."""
    started = time.monotonic()
    while True:
        busy = machine_busy()
        time.sleep(window)
        waited = time.monotonic() - started
        if (machine_busy() - busy) / window < cores or waited >= max_wait:
            return waited


# --- peaks during a run ------------------------------------------------------------------


class PeakSampler:
    """Samples /proc every ``interval`` s in a thread: the peak RSS of each named tree and of
    one session, and a guard that calls ``on_limit`` once when the session exceeds
    ``limit`` bytes."""

    def __init__(
        self,
        trees: Mapping[str, Sequence[int]],
        *,
        interval: float = 0.2,
    ) -> None:
        self.trees = {name: list(pids) for name, pids in trees.items()}
        self.interval = interval
        self.peaks: dict[str, int] = dict.fromkeys(self.trees, 0)
        # Long-lived servers keep what earlier runs made them allocate: the peak alone
        # overstates what one run needs, so keep the RSS at the start too.
        self.starts: dict[str, int] = {}
        self.session_peak = 0
        self.limit_hit = False
        self._session: int | None = None
        self._limit: int | None = None
        self._on_limit: Callable[[], None] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="peak-sampler", daemon=True)

    def watch_session(
        self, sid: int, limit: int | None = None, on_limit: Callable[[], None] | None = None
    ) -> None:
        self._session, self._limit, self._on_limit = sid, limit, on_limit

    def start(self) -> PeakSampler:
        procs = scan()
        self.starts = {name: tree_rss(procs, roots) for name, roots in self.trees.items()}
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()  # one last look (the trees outlive the run; the session may not)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        procs = scan()
        for name, roots in self.trees.items():
            self.peaks[name] = max(self.peaks[name], tree_rss(procs, roots))
        if self._session is None:
            return
        rss = session_rss(procs, self._session)
        self.session_peak = max(self.session_peak, rss)
        if self._limit is not None and rss > self._limit and not self.limit_hit:
            self.limit_hit = True
            if self._on_limit is not None:
                self._on_limit()


class NewObjects:
    """The blobs a run writes: objects (files, S3 keys) that appear while it runs, each with
    the largest size seen, polled every ``interval`` s in a thread. Procella never reuses a
    blob key, but deletes a superseded full text at once, so sizes before and after would
    miss what was written and deleted in between; polling misses only an object that lives
    shorter than one interval."""

    def __init__(self, list_sizes: Callable[[], dict[str, int]], interval: float) -> None:
        self._list = list_sizes
        self.interval = interval
        self._before = set(list_sizes())
        self.seen: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="new-objects", daemon=True)

    def start(self) -> NewObjects:
        self._thread.start()
        return self

    def stop(self) -> NewObjects:
        self._stop.set()
        self._thread.join()
        self.poll()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()

    def poll(self) -> None:
        for key, size in self._list().items():
            if key not in self._before:
                self.seen[key] = max(self.seen.get(key, 0), size)

    @property
    def bytes(self) -> int:
        return sum(self.seen.values())


def file_sizes(root: Path) -> dict[str, int]:
    """Files under ``root`` by relative path (a blob being written aside is skipped)."""
    found: dict[str, int] = {}
    for folder, _dirs, files in os.walk(root):
        for name in files:
            if name.startswith(".tmp-"):
                continue
            path = os.path.join(folder, name)
            with contextlib.suppress(OSError):
                found[os.path.relpath(path, root)] = os.lstat(path).st_size
    return found


# --- the measured CLI run ----------------------------------------------------------------


@dataclass
class CliRun:
    rc: int
    wall: float
    cpu: float  # user + system of the CLI and the descendants it waited for
    write_bytes: int  # bytes written to files by the same (ru_oublock x 512)
    max_rss_single: int  # the largest single process of the same, bytes (ru_maxrss)
    rss_peak: int = 0  # sampled sum over the CLI's session, bytes
    server_peaks: dict[str, int] = field(default_factory=dict)
    server_starts: dict[str, int] = field(default_factory=dict)
    status: str = "ok"  # ok | failed | OOM guard | timeout
    stderr_tail: str = ""


def run_measured(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    log_dir: Path,
    timeout: float,
    max_rss: int | None,
    trees: Mapping[str, Sequence[int]],
    interval: float = 0.2,
) -> CliRun:
    """Run the CLI to completion and measure it; the server trees' peak RSS on the side."""
    log_dir.mkdir(parents=True, exist_ok=True)
    stem = f"cli-{time.monotonic_ns()}"
    out_path, err_path = log_dir / f"{stem}.out", log_dir / f"{stem}.err"
    sampler = PeakSampler(trees, interval=interval)
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        started = time.perf_counter()
        # Output to files, not pipes: a 5000-resource display never stalls on a full pipe.
        process = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    try:
        sampler.watch_session(process.pid, max_rss, lambda: kill_session(process))
        sampler.start()
        rc, usage, timed_out = _wait4(process, timeout)
        wall = time.perf_counter() - started
    finally:
        # Providers or a language host the CLI left behind must not outlive the run, and a
        # Ctrl-C here must not leave the CLI running.
        kill_session(process)
        if process.returncode is None:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(process.pid, 0)
            process.returncode = -9
        sampler.stop()
    run = CliRun(
        rc=rc,
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        write_bytes=usage.ru_oublock * 512,
        max_rss_single=usage.ru_maxrss * 1024,
        rss_peak=sampler.session_peak,
        server_peaks=dict(sampler.peaks),
        server_starts=dict(sampler.starts),
    )
    if sampler.limit_hit:
        run.status = "OOM guard"
    elif timed_out:
        run.status = "timeout"
    elif rc != 0:
        run.status = "failed"
    if run.status != "ok":
        run.stderr_tail = (
            (out_path.read_text(errors="replace")[-1500:])
            + (err_path.read_text(errors="replace")[-1500:])
        )
    return run


def _wait4(
    process: subprocess.Popen[Any], timeout: float
) -> tuple[int, resource.struct_rusage, bool]:
    """Reap the CLI with its rusage; kill its session once ``timeout`` has passed."""
    deadline = time.monotonic() + timeout
    timed_out = False
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid == process.pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return process.returncode, usage, timed_out
        if not timed_out and time.monotonic() > deadline:
            timed_out = True
            kill_session(process)
        time.sleep(0.05)


# --- PostgreSQL and S3 ---------------------------------------------------------------------


def postmaster_pid(data_dir: Path) -> int:
    """The postmaster of a PostgreSQL data folder: the first line of postmaster.pid."""
    return int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])


def wal_position(admin_url: str) -> int:
    """The server's current WAL insert position in bytes. Its difference over a run is the
    WAL written by every database of the server (exact, unlike pg_stat_wal, whose counters
    backends publish up to a second late)."""
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')").fetchone()
    assert row is not None
    return int(row[0])


def bucket_sizes(endpoint: str, bucket: str) -> dict[str, int]:
    """The bucket's objects by key (for NewObjects)."""
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    found: dict[str, int] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        found.update({obj["Key"]: int(obj["Size"]) for obj in page.get("Contents", [])})
    return found


class MotoS3:
    """moto's S3 server as a child process on 127.0.0.1 (stop() ends it)."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            poll(self._up, timeout=60, message=f"moto S3 server on {self.endpoint}")
        except BaseException:
            self.stop()
            raise

    def _up(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"moto's server exited with code {self.process.returncode}")
        try:
            with urllib.request.urlopen(self.endpoint + "/", timeout=2):
                return True
        except urllib.error.HTTPError:
            return True  # it answers: that is all we need
        except OSError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            stop_group(self.process)
        self._log.close()
