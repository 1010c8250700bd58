"""``procella serve`` as a child process on 127.0.0.1, with a data folder of its own.

``ProcellaServer`` starts it (retrying on a new port when the probed one was taken), waits
for /healthz, runs the operator's commands on its store (``procella token create``, ...),
makes raw API calls (``call_api``) and stops its process group. The e2e suite, the
benchmarks and the load runs all start their servers through it.

Standard library only, so the benchmarks run from any Python with the toolchain built.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from procella_testing import wire
from procella_testing.processes import (
    Result,
    expect_ok,
    free_port,
    kill_group,
    poll,
    run_command,
    stop_group,
)

SERVER_START_TIMEOUT = 60.0


def server_command() -> list[str]:
    """How to run Procella: $PROCELLA_E2E_COMMAND, else the `procella` console script next
    to this interpreter, else `python -m procella`."""
    override = os.environ.get("PROCELLA_E2E_COMMAND")
    if override:
        return shlex.split(override)
    script = Path(sys.executable).parent / "procella"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "procella"]


class ServerError(RuntimeError):
    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


# How the CLI saves state: journal entries (journalVersion 1), delta checkpoints, or whole
# checkpoints. The server decides: it answers journalVersion 1 only with journaling on, and
# advertises delta checkpoints only with them on. "full" leaves deltas at the server's
# default (off), so it is what a CLI that does not journal meets by default.
MODES = ("journal", "delta", "full")


# How long each server reuses what it read of a token, and an OIDC issuer's keys: the tests
# of a revoked token and of a retired key wait these out, until no replica still holds them.
AUTH_CACHE_SECONDS = 5
OIDC_JWKS_CACHE_SECONDS = 3


class ProcellaServer:
    """``procella serve`` on 127.0.0.1 with the embedded default store in ``data_dir``."""

    def __init__(
        self,
        data_dir: Path,
        *,
        mode: str,
        cutoff_bytes: int | None = 0,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        self.data_dir = data_dir
        self.mode = mode
        self.delta = mode == "delta"
        self.admin_token = "pul-" + secrets.token_hex(20)
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._cutoff_bytes = cutoff_bytes
        self._extra_env = dict(extra_env or {})
        self._use_port(free_port())

    def _use_port(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.env = self._make_env(self._cutoff_bytes, self._extra_env)

    def _make_env(self, cutoff_bytes: int | None, extra: Mapping[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROCELLA_")}
        env.update(
            {
                "PROCELLA_LISTEN_ADDR": f"127.0.0.1:{self.port}",
                "PROCELLA_DATA_DIR": str(self.data_dir),
                "PROCELLA_ADMIN_TOKEN": self.admin_token,
                "PROCELLA_JOURNALING": "true" if self.mode == "journal" else "false",
                "PROCELLA_SHUTDOWN_TIMEOUT_SECONDS": "5",
                # The OIDC tests' issuer (procella_testing/oidc_issuer.py) listens on 127.0.0.1.
                "PROCELLA_OIDC_ALLOW_PRIVATE_ISSUERS": "true",
                "PROCELLA_AUTH_CACHE_SECONDS": str(AUTH_CACHE_SECONDS),
                "PROCELLA_OIDC_JWKS_CACHE_SECONDS": str(OIDC_JWKS_CACHE_SECONDS),
                "PROCELLA_LOG_LEVEL": os.environ.get("PROCELLA_E2E_LOG_LEVEL", "INFO"),
            }
        )
        if self.delta:
            env["PROCELLA_DELTA_CHECKPOINTS"] = "true"
        if cutoff_bytes is not None:  # None: the server's default
            env["PROCELLA_DELTA_CHECKPOINT_CUTOFF_BYTES"] = str(cutoff_bytes)
        env.update(extra)
        return env

    def start(self, timeout: float = SERVER_START_TIMEOUT, attempts: int = 3) -> None:
        """Start and wait for /healthz. The free port was probed, not reserved: another
        process may take it first, so an early exit is retried on a new port."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, attempts + 1):
            try:
                self._start_once(timeout)
                return
            except ServerError as exc:
                self.stop()
                if attempt == attempts or exc.timed_out:
                    raise ServerError(
                        f"procella serve did not come up: {exc}\n{self.log_tail()}"
                    ) from None
                self._use_port(free_port())

    def _start_once(self, timeout: float) -> None:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [*server_command(), "serve"],
            cwd=self.data_dir,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            poll(self._healthy, timeout=timeout, interval=0.1, message=f"{self.url}/healthz")
        except TimeoutError as exc:
            raise ServerError(str(exc), timed_out=True) from None

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise ServerError(f"procella serve exited with code {self.process.returncode}")
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=2) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                stop_group(self.process, timeout=20)
            # Worker processes of a crashed server may linger in the group.
            kill_group(self.process, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_tail(self, since: int = 0, max_bytes: int = 20000) -> str:
        if not self.log_path.exists():
            return "(no server log)"
        data = self.log_path.read_bytes()[since:]
        if len(data) > max_bytes:
            data = b"...(truncated)...\n" + data[-max_bytes:]
        return data.decode(errors="replace")

    def admin_command(self, *args: str) -> Result:
        """`procella <args>` on this server's store, as its operator would run it."""
        result = run_command(
            [*server_command(), *args], cwd=self.data_dir, env=self.env, timeout=60
        )
        expect_ok(result)
        return result

    def create_token(self, org: str, role: str, user: str | None = None) -> str:
        """`procella token create`: prints the new API token as its last stdout line."""
        args = ["token", "create", "--org", org, "--role", role]
        if user is not None:
            args += ["--user", user]
        result = self.admin_command(*args)
        lines = result.stdout.strip().splitlines()
        if not lines:
            raise AssertionError(f"no token printed:\n{result.describe()}")
        return lines[-1].strip()

    def api(
        self, method: str, path: str, *, token: str | None = None, body: Any = None
    ) -> tuple[int, Any]:
        return call_api(self.url, method, path, token or self.admin_token, body)


def call_api(url: str, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
    """One HTTP call the way the CLI makes it; returns (status, decoded JSON or None)."""
    data = None if body is None else wire.compact(body)
    headers = wire.token_headers(token)
    request = urllib.request.Request(url + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw) if raw else None
    except json.JSONDecodeError:
        return status, raw.decode(errors="replace")
