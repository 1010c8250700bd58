"""The real ``pulumi`` CLI, driven the way a user would, with nothing leaking in from the host.

* ``PulumiCLI`` runs the binary of a toolchain (``pulumi_toolchain``) with an isolated
  PULUMI_HOME, returning ``Result(rc, stdout, stderr)``; ``start`` runs one in the
  background (in a session of its own, so a test can SIGKILL the CLI together with its
  language host and providers).
* ``Stack`` is one stack driven from a project folder; ``make_project`` copies a program
  from ``e2e/programs/`` under a unique project name.
* ``engine_changes``, ``resources``, ``by_name``, ``root_outputs`` read what the CLI printed
  or exported.

Standard library only, so the benchmarks run from any Python with the toolchain built.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from procella_testing import pulumi_toolchain
from procella_testing.processes import Background, Result, expect_ok, run_command

# The e2e suite's test programs and `pulumi new` templates, used by the other trees too.
E2E_DIR = Path(__file__).resolve().parent.parent / "e2e"
PROGRAMS_DIR = E2E_DIR / "programs"
TEMPLATES_DIR = E2E_DIR / "templates"

DEFAULT_COMMAND_TIMEOUT = 240.0

# Variables the CLI reads that must not leak in from the developer's shell: another backend,
# a passphrase (it would pick the passphrase secrets provider), AI-agent markers (they change
# the login flow), CI markers (they change the update metadata).
_SCRUBBED_PREFIXES = ("PULUMI_", "CODEX_", "COPILOT_", "OPENCODE")
_SCRUBBED_NAMES = frozenset(
    {"AI_AGENT", "CLAUDECODE", "CLAUDE_CODE", "CURSOR_AGENT", "GEMINI_CLI", "REPL_ID"}
    | {"GOOSE_PROVIDER", "CI", "GITHUB_ACTIONS", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONPATH"}
)


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
