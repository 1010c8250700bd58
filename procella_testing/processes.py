"""Child processes of the test harnesses: started in sessions of their own, waited for with
a deadline, and stopped with everything they started.

* ``poll`` waits for a condition; ``free_port`` probes a port on 127.0.0.1.
* ``run_command`` runs to completion (``Result(rc, stdout, stderr)``); ``Background`` runs
  in the background with its output in files (no pipe stalls).
* ``stop_group`` / ``kill_group`` / ``kill_session`` end a child and what it started.

Standard library only, so the benchmarks run from any Python with the toolchain built.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def poll(
    condition: Callable[[], Any],
    *,
    timeout: float,
    interval: float = 0.1,
    message: str = "condition",
) -> Any:
    """Call ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {message}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def kill_group(process: subprocess.Popen[Any], sig: signal.Signals) -> None:
    """Signal the whole process group the child leads (it was started in a new session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def stop_group(process: subprocess.Popen[Any], timeout: float = 10) -> None:
    """SIGTERM the child's process group, then SIGKILL it if the child outlives ``timeout``."""
    kill_group(process, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(process, signal.SIGKILL)
        process.wait()


def kill_session(process: subprocess.Popen[Any]) -> None:
    """SIGKILL every process of the session the child leads.

    The CLI starts its language host and providers in process groups of their own (so a
    Ctrl-C reaches only the CLI), so killing the CLI's group would leave them running; they
    stay in its session, though, because they never call setsid.
    """
    kill_group(process, signal.SIGKILL)
    for pid in _session_members(process.pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _session_members(sid: int) -> list[int]:
    try:
        entries = os.listdir("/proc")
    except OSError:  # not Linux: the process group is all we can find
        return []
    members = []
    for entry in entries:
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.getsid(int(entry)) == sid:
                    members.append(int(entry))
    return members


# --- results ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    args: tuple[str, ...]
    rc: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def describe(self) -> str:
        return (
            f"$ {shlex.join(self.args)}\nexit code: {self.rc}\n"
            f"--- stdout ---\n{self.stdout.rstrip()}\n--- stderr ---\n{self.stderr.rstrip()}"
        )

    def json(self) -> Any:
        try:
            return json.loads(self.stdout)
        except json.JSONDecodeError as exc:
            raise AssertionError(f"stdout is not JSON ({exc}):\n{self.describe()}") from None


def expect_ok(result: Result) -> Result:
    if result.rc != 0:
        raise AssertionError(f"command failed:\n{result.describe()}")
    return result


def expect_fail(result: Result, *needles: str) -> Result:
    """The command failed and its output mentions every needle (case-insensitive)."""
    if result.rc == 0:
        raise AssertionError(f"command unexpectedly succeeded:\n{result.describe()}")
    missing = [n for n in needles if n.lower() not in result.output.lower()]
    if missing:
        raise AssertionError(f"output lacks {missing!r}:\n{result.describe()}")
    return result


# --- processes ----------------------------------------------------------------------------


class Background:
    """A command running in a session of its own, output going to files (no pipe stalls)."""

    def __init__(self, args: Sequence[str], cwd: Path, env: Mapping[str, str], log_dir: Path):
        log_dir.mkdir(parents=True, exist_ok=True)
        stem = f"bg-{time.monotonic_ns()}"
        self.args = tuple(args)
        self._out_path = log_dir / f"{stem}.out"
        self._err_path = log_dir / f"{stem}.err"
        with open(self._out_path, "wb") as out, open(self._err_path, "wb") as err:
            self.process = subprocess.Popen(
                list(args),
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )

    def poll(self) -> int | None:
        return self.process.poll()

    def wait(self, timeout: float) -> Result:
        try:
            rc = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"timed out after {timeout:.0f} s:\n{self._result(-9).describe()}"
            ) from None
        return self._result(rc)

    def kill(self) -> None:
        """SIGKILL the command and everything it started (language host, providers)."""
        # Also when the CLI already exited: its children may linger in the session.
        kill_session(self.process)
        self.process.wait()

    def _result(self, rc: int) -> Result:
        return Result(
            self.args,
            rc,
            self._out_path.read_text(errors="replace"),
            self._err_path.read_text(errors="replace"),
        )


def run_command(
    args: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout: float,
    stdin: str | None = None,
) -> Result:
    """Run to completion in a new session; on timeout kill the session and fail."""
    with subprocess.Popen(
        list(args),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            out, err = process.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_session(process)
            out, err = process.communicate()
            partial = Result(tuple(args), -9, out, err)
            raise AssertionError(
                f"timed out after {timeout:.0f} s:\n{partial.describe()}"
            ) from None
        # Providers and language hosts left behind by a crashing CLI must not outlive it.
        kill_session(process)
    return Result(tuple(args), process.returncode, out, err)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (one owned by another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
