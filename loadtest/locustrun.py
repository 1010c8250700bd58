"""Run the locust CLI from the load venv as a child process, and measure what it used.

Locust is never imported here: it patches the process with gevent, which breaks asyncio
code (the repository's helpers, psycopg). It runs in a process group of its own, so a
timeout or an interrupt stops it and anything it started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

HERE = Path(__file__).resolve().parent
LOCUSTFILE = HERE / "locustfile.py"
REPO = HERE.parent
SETTLE_SECONDS = 60.0  # on top of the run time: ramp-up, stopping users, writing files


@dataclass(frozen=True)
class Plan:
    """One locust run: who, how many, how long, and the LOAD_* settings of the locustfile."""

    locust: Path
    users: int
    spawn_rate: float
    run_time: int
    load_env: Mapping[str, str]
    classes: Sequence[str] = ()


@dataclass(frozen=True)
class Outcome:
    exit_code: int
    cpu_seconds: float  # user + system time of locust, from wait4
    wall_seconds: float


def run(plan: Plan, url: str, out: Path) -> Outcome:
    """Run locust against ``url`` until its run time is over; results go to ``out``."""
    if urlparse(url).hostname != "127.0.0.1":
        raise RuntimeError(f"refusing to load anything but 127.0.0.1: {url}")
    argv = [
        str(plan.locust),
        *("-f", str(LOCUSTFILE), "--headless", "--only-summary", "--loglevel", "WARNING"),
        *("-u", str(plan.users), "-r", f"{plan.spawn_rate:g}", "-t", f"{plan.run_time}s"),
        *("--host", url, "--json-file", str(out / "locust"), "--csv", str(out / "locust")),
        *plan.classes,
    ]
    # The load venv's locust must not pick up this interpreter's paths; only the checkout's,
    # for procella_testing.wire (standard library only), which pulumi_wire sends.
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
    }
    env["PYTHONPATH"] = str(REPO)
    env.update(plan.load_env)
    started = time.monotonic()
    deadline = started + plan.run_time + plan.users / plan.spawn_rate + SETTLE_SECONDS
    with open(out / "locust.log", "wb") as log:
        process = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as one
        )
    try:
        status, usage = _wait_with_usage(process, deadline)
    finally:
        if process.returncode is None:
            _kill_group(process.pid, signal.SIGKILL)
            process.wait()
    if not (out / "locust.json").exists():
        tail = (out / "locust.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"locust wrote no results (exit {status}):\n{tail}")
    return Outcome(status, usage, time.monotonic() - started)


def _wait_with_usage(process: subprocess.Popen[bytes], deadline: float) -> tuple[int, float]:
    """Wait with wait4, which also returns the CPU the child used; past the deadline,
    SIGTERM its group (locust then writes its results), 20 s later give up."""
    signalled = False
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid == process.pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return process.returncode, usage.ru_utime + usage.ru_stime
        now = time.monotonic()
        if now > deadline + 20:
            raise TimeoutError("locust did not stop after SIGTERM")
        if now > deadline and not signalled:
            print("locust overran its time: stopping it", file=sys.stderr)
            _kill_group(process.pid, signal.SIGTERM)
            signalled = True
        time.sleep(0.2)


def _kill_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
