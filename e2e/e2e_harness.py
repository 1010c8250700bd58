"""Process helpers shared by the e2e conftest, the tests and bench_up.py.

* ``ProcellaServer`` runs ``procella serve`` on 127.0.0.1 with its own data folder.
* ``PulumiCLI`` runs the real ``pulumi`` binary with an isolated PULUMI_HOME, returning
  ``Result(rc, stdout, stderr)``; ``start`` runs one in the background (in a session of
  its own, so a test can SIGKILL the CLI together with its language host and providers).
* ``make_project`` copies a program from ``programs/`` under a unique project name.

Standard library only, so the benchmark runs from any Python with the toolchain built.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pulumi_toolchain

E2E_DIR = Path(__file__).resolve().parent
PROGRAMS_DIR = E2E_DIR / "programs"
TEMPLATES_DIR = E2E_DIR / "templates"

DEFAULT_COMMAND_TIMEOUT = 240.0
SERVER_START_TIMEOUT = 60.0

# Variables the CLI reads that must not leak in from the developer's shell: another backend,
# a passphrase (it would pick the passphrase secrets provider), AI-agent markers (they change
# the login flow), CI markers (they change the update metadata).
_SCRUBBED_PREFIXES = ("PULUMI_", "CODEX_", "COPILOT_", "OPENCODE")
_SCRUBBED_NAMES = frozenset(
    {"AI_AGENT", "CLAUDECODE", "CLAUDE_CODE", "CURSOR_AGENT", "GEMINI_CLI", "REPL_ID"}
    | {"GOOSE_PROVIDER", "CI", "GITHUB_ACTIONS", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONPATH"}
)


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


# --- the pulumi CLI -----------------------------------------------------------------------


class PulumiCLI:
    """The real CLI with its own PULUMI_HOME; ``token`` is PULUMI_ACCESS_TOKEN."""

    def __init__(
        self,
        toolchain: Path,
        home: Path,
        *,
        backend_url: str,
        token: str | None,
        cwd: Path,
        extra_env: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_COMMAND_TIMEOUT,
    ) -> None:
        self.toolchain = toolchain
        self.home = home
        self.backend_url = backend_url
        self.token = token
        self.cwd = cwd
        self.timeout = timeout
        self.extra_env = dict(extra_env or {})
        self._background: list[Background] = []
        home.mkdir(parents=True, exist_ok=True)

    @property
    def executable(self) -> str:
        return str(pulumi_toolchain.bin_dir(self.toolchain) / "pulumi")

    @property
    def debug_flags(self) -> list[str]:
        """$PROCELLA_E2E_PULUMI_FLAGS, e.g. "--logtostderr --logflow -v=10" to see every API
        call of the CLI (on stderr, which failing tests print)."""
        return shlex.split(os.environ.get("PROCELLA_E2E_PULUMI_FLAGS", ""))

    @property
    def env(self) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in _SCRUBBED_NAMES and not key.startswith(_SCRUBBED_PREFIXES)
        }
        env["PATH"] = os.pathsep.join(
            [*pulumi_toolchain.path_entries(self.toolchain), env.get("PATH", "")]
        )
        env["PULUMI_HOME"] = str(self.home)
        env["PULUMI_SKIP_UPDATE_CHECK"] = "true"
        env["NO_COLOR"] = "1"
        if self.token is not None:
            env["PULUMI_ACCESS_TOKEN"] = self.token
        env.update(self.extra_env)
        return env

    def with_token(self, token: str, home: Path) -> PulumiCLI:
        """Another user: same toolchain and server, its own PULUMI_HOME and credentials."""
        return PulumiCLI(
            self.toolchain,
            home,
            backend_url=self.backend_url,
            token=token,
            cwd=self.cwd,
            extra_env=self.extra_env,
            timeout=self.timeout,
        )

    def run(
        self,
        *args: str,
        cwd: Path | None = None,
        timeout: float | None = None,
        stdin: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Result:
        full_env = {**self.env, **(env or {})}
        return run_command(
            [self.executable, *self.debug_flags, *args],
            cwd=cwd or self.cwd,
            env=full_env,
            timeout=timeout or self.timeout,
            stdin=stdin,
        )

    def ok(self, *args: str, **kwargs: Any) -> Result:
        return expect_ok(self.run(*args, **kwargs))

    def json(self, *args: str, **kwargs: Any) -> Any:
        return self.ok(*args, **kwargs).json()

    def start(
        self, *args: str, cwd: Path | None = None, env: Mapping[str, str] | None = None
    ) -> Background:
        run = Background(
            [self.executable, *self.debug_flags, *args],
            cwd=cwd or self.cwd,
            env={**self.env, **(env or {})},
            log_dir=self.home / "background",
        )
        self._background.append(run)
        return run

    def login(self) -> Result:
        return self.ok("login", self.backend_url)

    def close(self) -> None:
        """Kill background commands a failed test left running."""
        for run in self._background:
            run.kill()


# --- test programs ------------------------------------------------------------------------


def make_project(program: str, project: str, parent: Path) -> Path:
    """Copy ``programs/<program>`` to ``parent/<project>`` and name the project ``project``."""
    target = parent / project
    shutil.copytree(PROGRAMS_DIR / program, target)
    manifest = target / "Pulumi.yaml"
    text = re.sub(r"(?m)^name: .*$", f"name: {project}", manifest.read_text(), count=1)
    manifest.write_text(text)
    return target


# --- the server ---------------------------------------------------------------------------


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
                # The OIDC tests' issuer (tests/oidc_issuer.py) listens on 127.0.0.1.
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
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, method=method)
    request.add_header("Accept", "application/vnd.pulumi+9")
    request.add_header("Content-Type", "application/json")
    request.add_header("Authorization", f"token {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw) if raw else None
    except json.JSONDecodeError:
        return status, raw.decode(errors="replace")


# --- stacks and their state ------------------------------------------------------------


@dataclass(frozen=True)
class Names:
    """Unique names for one test (tests share a server). Orgs are 3-40 of [A-Za-z0-9_-]."""

    org: str
    project: str

    def stack(self, name: str = "dev", *, project: str | None = None) -> str:
        return f"{self.org}/{project or self.project}/{name}"


def engine_changes(result: Result) -> dict[str, int]:
    """``resourceChanges`` of the summary event in ``up/refresh/destroy --json`` output
    (with --skip-preview the CLI prints engine events as JSON lines)."""
    for line in reversed(result.stdout.splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        with contextlib.suppress(json.JSONDecodeError):
            summary = json.loads(line).get("summaryEvent")
            if summary is not None:
                return dict(summary["resourceChanges"])
    raise AssertionError(f"no summaryEvent in the output:\n{result.describe()}")


def resources(exported: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(exported["deployment"].get("resources") or [])


def by_name(exported: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Resources of a `stack export` by the name at the end of their URN."""
    return {r["urn"].rsplit("::", 1)[1]: r for r in resources(exported)}


def root_outputs(exported: Mapping[str, Any]) -> dict[str, Any]:
    roots = [r for r in resources(exported) if r["type"] == "pulumi:pulumi:Stack"]
    assert len(roots) == 1, f"expected one pulumi:pulumi:Stack resource, got {len(roots)}"
    return dict(roots[0].get("outputs") or {})


@dataclass
class Stack:
    """One stack (``org/project/stack``) driven from a project folder."""

    cli: PulumiCLI
    name: str
    cwd: Path

    def run(self, *args: str, **kwargs: Any) -> Result:
        return self.cli.run(*args, "--stack", self.name, cwd=self.cwd, **kwargs)

    def ok(self, *args: str, **kwargs: Any) -> Result:
        return expect_ok(self.run(*args, **kwargs))

    def init(self) -> Stack:
        self.cli.ok("stack", "init", self.name, cwd=self.cwd)
        return self

    def up(self, *flags: str) -> dict[str, int]:
        """`pulumi up` without preview; the resource changes of the update."""
        return engine_changes(self.ok("up", "--yes", "--skip-preview", "--json", *flags))

    def export(self) -> dict[str, Any]:
        exported: dict[str, Any] = self.ok("stack", "export").json()
        return exported

    def resources(self) -> dict[str, dict[str, Any]]:
        return by_name(self.export())

    def urn(self, name: str) -> str:
        return str(self.resources()[name]["urn"])

    def start_up(self, *flags: str) -> Background:
        return self.cli.start(
            "up", "--yes", "--skip-preview", "--stack", self.name, *flags, cwd=self.cwd
        )
