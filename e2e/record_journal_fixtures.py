"""Record journal replay fixtures from the real pulumi CLI (tests/unit/journal_fixtures/).

    python e2e/record_journal_fixtures.py [--cli-version X | --all] [--out DIR] [--keep]

For each pinned CLI this starts a `procella serve` with journaling on (embedded store, the
garbage collector held off so no entry is pruned), drives the CLI through the scenarios
below with the `things` program, and for every journaling update they make:

1. reads the update's journal entries from the server's SQLite database (read-only), in
   arrival order (``position``), which is the order Procella replays them in;
2. takes its base state: the stack's export at the previous version (``null`` before the
   first version);
3. checks that Procella's own state for that version (its export at the version) is what
   ``pulumi-journal-replay`` (the default pin's build of the CLI's own ``JournalReplayer``)
   makes of them, apart from the manifest and the order of the pending operations;
4. writes ``<out>/v<cli>-<scenario>.json`` with ``cli_version``, ``description``, ``base``,
   ``entries`` and ``expected``. To keep the files small, ``base`` and ``entries`` are
   shortened first (``shrink``): every long secret ciphertext (the dynamic provider,
   pickled and encrypted: 8 KB in every input and output) becomes
   ``elided:<length>:<sha256 prefix>``, and stack traces lose their frames outside the
   program (the SDK, asyncio: paths on this machine). ``expected`` is the oracle's replay
   of the shortened inputs; replay never looks inside values or stack traces.

A mismatch is reported and makes the exit code 1 (the fixtures are written all the same:
the unit test then shows the difference too). The scenarios, per CLI pin:

* ``basic-up``, ``basic-gen2``, ``basic-refresh``, ``basic-target``, ``basic-destroy``:
  the basic program's first `up`; generation 2 (an update, a replacement, a delete);
  `refresh`; `up --target` of one resource; `destroy` after `state unprotect`.
* ``pending-killed``, ``pending-up``, ``pending-clear``: a `pulumi up` SIGKILLed while a
  create is in flight, then `pulumi cancel`; `up` (the base's pending create survives it);
  `refresh --clear-pending-creates` (the CLI drops the pending create with a state import
  first, which is the base, then refreshes).
* ``failed-create``: an `up` whose second create raises (its ``wait_file`` is in a folder
  that does not exist, so the provider cannot write its marker file).

Standard library only (like procella_testing's process helpers). Run it with the interpreter
that has Procella and its `test` extra installed: the server is the ``procella`` script next
to it (or $PROCELLA_E2E_COMMAND).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from procella_testing import pulumi_toolchain
from procella_testing.procella_server import ProcellaServer
from procella_testing.processes import Result, expect_fail, expect_ok, poll
from procella_testing.pulumi_cli import E2E_DIR, PulumiCLI, Stack, make_project

Json = dict[str, Any]

FIXTURES_DIR = E2E_DIR.parent / "tests" / "unit" / "journal_fixtures"
ORG = "fixtures"
PROJECT = "things"
STARTED_TIMEOUT = 120.0
# The CLI logs each batch it sends at -v=11 ("flushing journal entries: len=N, cap=M").
BATCH_LOG = re.compile(r"flushing journal entries: len=(\d+)")
VERBOSE_FLAGS = ("--logtostderr", "-v=11")
# procella.state.journal.BASE_RESOURCE (this script imports nothing of Procella's).
BASE_RESOURCE = "procellaBaseResource"
# How a secret value looks in the state (resource.SecretSig), and the ciphertexts shortened.
SECRET_SIG = "4dabf18193072939515e22adb298388d"
LONG_CIPHERTEXT = 256


class RecordingError(RuntimeError):
    """A scenario did not go as planned; the message says what the CLI or server did."""


# --- reading the server ---------------------------------------------------------------------


@dataclass(frozen=True)
class UpdateRow:
    id: str
    version: int
    kind: str
    status: str


@dataclass(frozen=True)
class EntryRow:
    position: int
    sequence_id: int
    kind: int
    body: Json


@contextlib.contextmanager
def read_only(db: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        yield conn
    finally:
        conn.close()


def journal_updates(db: Path, stack: str) -> list[UpdateRow]:
    """The stack's started, non-preview journaling updates, oldest first."""
    org, project, name = stack.split("/")
    with read_only(db) as conn:
        rows = conn.execute(
            "SELECT u.id, u.version, u.kind, u.status FROM updates u "
            "JOIN stacks s ON s.id = u.stack_id JOIN orgs o ON o.id = s.org_id "
            "WHERE o.name = ? AND s.project = ? AND s.name = ? AND u.journal_version = 1 "
            "AND NOT u.is_preview AND u.version IS NOT NULL ORDER BY u.version",
            (org, project, name),
        ).fetchall()
    return [UpdateRow(str(i), int(v), str(k), str(s)) for i, v, k, s in rows]


def journal_entries(db: Path, update_id: str) -> list[EntryRow]:
    with read_only(db) as conn:
        rows = conn.execute(
            "SELECT position, sequence_id, kind, body FROM journal_entries "
            "WHERE update_id = ? ORDER BY position",
            (update_id,),
        ).fetchall()
    return [EntryRow(int(p), int(s), int(k), json.loads(bytes(b))) for p, s, k, b in rows]


def exported(server: ProcellaServer, stack: str, version: int) -> Json:
    status, body = server.api("GET", f"/api/stacks/{stack}/export/{version}")
    if status != 200 or not isinstance(body, dict):
        raise RecordingError(f"GET export/{version} of {stack}: {status} {body!r}")
    return body


# --- the oracle -----------------------------------------------------------------------------


def oracle_path() -> Path:
    root = pulumi_toolchain.ensure_toolchain(pulumi_toolchain.DEFAULT_CLI_VERSION, verbose=True)
    return pulumi_toolchain.bin_dir(root) / pulumi_toolchain.JOURNAL_REPLAY_EXECUTABLE


def as_sent(body: Json, base: Json | None) -> Json:
    """A stored entry as the CLI sent it: Procella stores the state of a `same` step as a
    reference to the base's resource (``procellaBaseResource``), which the CLI never sends."""
    index = body.get(BASE_RESOURCE)
    if index is None:
        return body
    assert base is not None, "a reference to a base resource without a base"
    sent = {key: value for key, value in body.items() if key != BASE_RESOURCE}
    sent["state"] = base["resources"][index]
    return sent


def run_oracle(oracle: Path, base: Json | None, entries: list[Json]) -> Json:
    stdin = json.dumps({"base": base, "entries": entries})
    done = subprocess.run(
        [str(oracle)], input=stdin, capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise RecordingError(f"{oracle.name} failed ({done.returncode}): {done.stderr.strip()}")
    result: Json = json.loads(done.stdout)
    return result


def shrink(value: Any) -> Any:
    """``value`` with every secret ciphertext longer than LONG_CIPHERTEXT replaced by
    ``elided:<length>:<sha256 prefix>`` (distinct ciphertexts stay distinct) and the stack
    frames outside the program (``project:///../...``) dropped from stack traces (a trace
    left empty is dropped, as the CLI never sends one)."""
    if isinstance(value, list):
        return [shrink(item) for item in value]
    if not isinstance(value, dict):
        return value
    out = {key: shrink(item) for key, item in value.items()}
    frames = out.get("stackTrace")
    if isinstance(frames, list):
        kept = [frame for frame in frames if not _outside_program(frame)]
        if kept:
            out["stackTrace"] = kept
        else:  # the CLI omits an empty stack trace (omitempty): so do we
            del out["stackTrace"]
    text = out.get("ciphertext")
    if SECRET_SIG in out and isinstance(text, str) and len(text) > LONG_CIPHERTEXT:
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        out["ciphertext"] = f"elided:{len(text)}:{digest}"
    return out


def _outside_program(frame: Any) -> bool:
    position = frame.get("sourcePosition") if isinstance(frame, dict) else None
    return isinstance(position, str) and position.startswith("project:///../")


# --- comparing ------------------------------------------------------------------------------


def comparable(typed: Json) -> Json:
    """A TypedDeployment without its manifest and with its pending operations in one order
    (Go collects unfinished operations from a map)."""
    deployment = dict(typed.get("deployment") or {})
    deployment.pop("manifest", None)
    if "pending_operations" in deployment:
        ops = deployment["pending_operations"] or []
        deployment["pending_operations"] = sorted(ops, key=lambda o: json.dumps(o, sort_keys=True))
    return {
        "version": typed.get("version"),
        "features": typed.get("features") or [],
        "deployment": deployment,
    }


def differences(want: Any, got: Any, path: str = "$") -> list[str]:
    """Where two JSON values differ, one line per place (lists by index, objects by key)."""
    if isinstance(want, dict) and isinstance(got, dict):
        out = []
        for key in [*want, *(k for k in got if k not in want)]:
            where = f"{path}.{key}"
            if key not in got:
                out.append(f"{where}: only in the oracle's: {short(want[key])}")
            elif key not in want:
                out.append(f"{where}: only in Procella's: {short(got[key])}")
            else:
                out.extend(differences(want[key], got[key], where))
        return out
    if isinstance(want, list) and isinstance(got, list):
        out = []
        if len(want) != len(got):
            out.append(f"{path}: {len(want)} items in the oracle's, {len(got)} in Procella's")
        for index, (a, b) in enumerate(zip(want, got, strict=False)):
            out.extend(differences(a, b, f"{path}[{index}]"))
        return out
    if want != got or type(want) is not type(got):
        return [f"{path}: oracle {short(want)} != Procella {short(got)}"]
    return []


def short(value: Any, limit: int = 160) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- recording ------------------------------------------------------------------------------


@dataclass
class Recorded:
    name: str
    update: UpdateRow
    fixture: Json
    batches: list[int]
    notes: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)


class Recorder:
    """Drives one CLI pin against one server and records its journaling updates."""

    def __init__(self, pin: str, server: ProcellaServer, cli: PulumiCLI, oracle: Path) -> None:
        self.pin = pin
        self.server = server
        self.cli = cli
        self.oracle = oracle
        self.db = server.data_dir / "procella.db"
        self.recorded: list[Recorded] = []

    @property
    def cli_version(self) -> str:
        return f"v{self.pin}"

    def record(
        self, stack: Stack, name: str, description: str, action: Callable[[], Result]
    ) -> None:
        """Run ``action`` (CLI commands on ``stack``) and record the one journaling update
        it makes as fixture ``name``."""
        before = {u.id for u in journal_updates(self.db, stack.name)}
        result = action()
        new = [u for u in journal_updates(self.db, stack.name) if u.id not in before]
        if len(new) != 1:
            raise RecordingError(f"{name}: expected one journaling update, found {new}")
        update = new[0]
        if update.status == "running":
            raise RecordingError(f"{name}: update {update.id} is still running")
        rows = journal_entries(self.db, update.id)
        if not rows:
            raise RecordingError(f"{name}: update {update.id} has no journal entries left")
        base = None
        if update.version > 1:
            base = exported(self.server, stack.name, update.version - 1)["deployment"]
        entries = [as_sent(row.body, base) for row in rows]
        expected = run_oracle(self.oracle, base, entries)
        procella = exported(self.server, stack.name, update.version)
        mismatches = differences(comparable(expected), comparable(procella))
        sequence = [row.sequence_id for row in rows]
        if sequence != sorted(sequence):
            description += (
                " The entries are in the order they arrived; their sequence IDs are not "
                "ascending (the CLI numbers an entry before encrypting its secrets)."
            )
        small_base, small_entries = shrink(base), shrink(entries)
        fixture = {
            "cli_version": self.cli_version,
            "description": description,
            "base": small_base,
            "entries": small_entries,
            "expected": run_oracle(self.oracle, small_base, small_entries),
        }
        batches = [int(n) for n in BATCH_LOG.findall(result.stderr)]
        item = Recorded(name, update, fixture, batches, mismatches=mismatches)
        self._check_order(item, rows, base, expected)
        self.recorded.append(item)
        print(f"  {self.cli_version}-{name}: {summary(item)}", flush=True)

    def _check_order(
        self, item: Recorded, rows: list[EntryRow], base: Json | None, expected: Json
    ) -> None:
        """Note entries that arrived out of sequence-ID order, and whether replaying them
        in sequence-ID order would give another state."""
        sequence = [row.sequence_id for row in rows]
        if sequence != sorted(sequence):
            item.notes.append(f"sequence IDs in arrival order: {sequence}")
            by_id = [as_sent(row.body, base) for row in sorted(rows, key=lambda r: r.sequence_id)]
            want, got = comparable(expected), comparable(run_oracle(self.oracle, base, by_id))
            if got != want:
                for typed in (want, got):
                    resources = typed["deployment"].get("resources") or []
                    typed["deployment"]["resources"] = sorted(resources, key=json.dumps)
                how = "in resource order only" if got == want else "beyond resource order"
                item.notes.append(f"replayed in sequence-ID order the state differs {how}")
        if len(set(sequence)) != len(sequence):
            item.notes.append("a sequence ID repeats")

    def write(self, out: Path) -> list[Path]:
        """Replace this pin's fixtures in ``out`` with the recorded ones."""
        out.mkdir(parents=True, exist_ok=True)
        for stale in out.glob(f"{self.cli_version}-*.json"):
            stale.unlink()
        paths = []
        for item in self.recorded:
            path = out / f"{self.cli_version}-{item.name}.json"
            text = json.dumps(item.fixture, indent=1, ensure_ascii=False)
            path.write_text(text + "\n", encoding="utf-8")
            paths.append(path)
        return paths


def summary(item: Recorded) -> str:
    kinds = Counter(entry["kind"] for entry in item.fixture["entries"])
    parts = [
        f"update {item.update.kind}/{item.update.status} v{item.update.version}",
        f"{len(item.fixture['entries'])} entries",
        "kinds " + ", ".join(f"{k}x{n}" for k, n in sorted(kinds.items())),
    ]
    if item.batches:
        parts.append("batches " + "+".join(map(str, item.batches)))
    parts.extend(item.notes)
    parts.append("MISMATCH" if item.mismatches else "procella == oracle")
    return "; ".join(parts)


# --- the scenarios --------------------------------------------------------------------------


def verbose(stack: Stack, *args: str, ok: bool = True) -> Result:
    """A stack command with the CLI's batch log on stderr."""
    result = stack.run(*args, *VERBOSE_FLAGS)
    return expect_ok(result) if ok else result


def basic(rec: Recorder, project: Path) -> None:
    stack = Stack(rec.cli, f"{ORG}/{PROJECT}/basic", project).init()
    stack.ok("config", "set", "scenario", "basic")
    stack.ok("config", "set", "generation", "1")
    up = ("up", "--yes", "--skip-preview")
    rec.record(
        stack,
        "basic-up",
        "First `pulumi up` of a new stack (basic scenario, generation 1): creates of the "
        "stack, the default pulumi-python provider, alpha, bravo, charlie, a component with "
        "two children and a protected resource (guarded), then the outputs entries of the "
        "component and of the stack (with a secret output); a secrets-manager entry first.",
        lambda: verbose(stack, *up),
    )
    stack.ok("config", "set", "generation", "2")
    rec.record(
        stack,
        "basic-gen2",
        "`pulumi up` of generation 2: alpha is updated, bravo replaced (create-before-delete: "
        "deleteOld, then removeOld), charlie deleted, the rest carried over by same steps.",
        lambda: verbose(stack, *up),
    )
    rec.record(
        stack,
        "basic-refresh",
        "`pulumi refresh`: every resource read back unchanged (refresh-success entries), "
        "then a rebuilt-base-state entry.",
        lambda: verbose(stack, "refresh", "--yes", "--skip-preview"),
    )
    stack.ok("config", "set", "generation", "1")
    alpha = stack.urn("alpha")
    rec.record(
        stack,
        "basic-target",
        "`pulumi up --target <alpha>` back to generation 1: only alpha is updated; bravo's "
        "replacement and charlie's create are skipped because they are not targeted.",
        lambda: verbose(stack, *up, "--target", alpha),
    )
    guarded = stack.urn("guarded")
    stack.ok("state", "unprotect", guarded, "--yes")  # an import (a checkpoint), no journal
    rec.record(
        stack,
        "basic-destroy",
        "`pulumi destroy` after `pulumi state unprotect` of guarded (that import is the "
        "base): every resource deleted, children before their parents.",
        lambda: verbose(stack, "destroy", "--yes", "--skip-preview"),
    )


def pending(rec: Recorder, project: Path, work: Path) -> None:
    stack = Stack(rec.cli, f"{ORG}/{PROJECT}/pending", project).init()
    release = work / "release"
    stack.ok("config", "set", "scenario", "slow")
    stack.ok("config", "set", "wait_file", str(release))

    def killed_then_cancelled() -> Result:
        run = rec.cli.start(
            "up", "--yes", "--skip-preview", "--stack", stack.name, *VERBOSE_FLAGS, cwd=project
        )
        marker = release.with_name(release.name + ".started")

        def started() -> bool:
            if run.poll() is not None:
                raise RecordingError(f"pulumi up ended early:\n{run.wait(5).describe()}")
            return marker.exists()

        poll(started, timeout=STARTED_TIMEOUT, message=f"{marker} (update reached `slow`)")
        run.kill()
        release.touch()  # from now on `slow` is created at once
        cancelled = stack.ok("cancel", "--yes")
        log = run.wait(5)
        return Result(log.args, log.rc, log.stdout + cancelled.stdout, log.stderr)

    rec.record(
        stack,
        "pending-killed",
        "`pulumi up` of the slow scenario, SIGKILLed while the create of `slow` was in "
        "flight (after `fast` was created), then `pulumi cancel`: the begin of the create "
        "never ends, so the state has it as a pending `creating` operation.",
        killed_then_cancelled,
    )
    rec.record(
        stack,
        "pending-up",
        "`pulumi up` right after the killed update: the base has a pending create of `slow`; "
        "the CLI warns and creates `slow`, and the base's pending create is kept in the "
        "state (the replayer keeps a base's pending creates until the user resolves them).",
        lambda: verbose(stack, "up", "--yes", "--skip-preview"),
    )
    rec.record(
        stack,
        "pending-clear",
        "`pulumi refresh --clear-pending-creates`: the CLI first drops the pending create with "
        "a state import (that import is the base), then refreshes every resource, ending with "
        "a rebuilt-base-state entry.",
        lambda: verbose(stack, "refresh", "--yes", "--skip-preview", "--clear-pending-creates"),
    )


def failing(rec: Recorder, project: Path, work: Path) -> None:
    stack = Stack(rec.cli, f"{ORG}/{PROJECT}/failing", project).init()
    stack.ok("config", "set", "scenario", "slow")
    # The provider writes "<wait_file>.started" first: in a missing folder its create raises.
    stack.ok("config", "set", "wait_file", str(work / "no-such-folder" / "release"))

    def failed_up() -> Result:
        result = verbose(stack, "up", "--yes", "--skip-preview", ok=False)
        return expect_fail(result, "no-such-folder")

    rec.record(
        stack,
        "failed-create",
        "`pulumi up` of a new stack whose second create fails (the provider raises): `fast` "
        "is created, `slow` gets a failure entry, the update fails.",
        failed_up,
    )


# --- the run --------------------------------------------------------------------------------


def record_pin(pin: str, oracle: Path, work: Path) -> Recorder:
    toolchain = pulumi_toolchain.ensure_toolchain(pin, verbose=True)
    server = ProcellaServer(
        work / "data", mode="journal", extra_env={"PROCELLA_GC_INTERVAL_SECONDS": "100000"}
    )
    cli = PulumiCLI(
        toolchain,
        work / "pulumi-home",
        backend_url=server.url,
        token=server.admin_token,
        cwd=work,
    )
    try:
        server.start()
        cli.backend_url = server.url  # start() may have moved to another port
        cli.login()
        rec = Recorder(pin, server, cli, oracle)
        print(f"pulumi v{pin} against {server.url} (work folder {work})", flush=True)
        project = make_project("things", PROJECT, work)
        basic(rec, project)
        pending(rec, project, work)
        failing(rec, project, work)
        return rec
    except BaseException:
        print(f"--- server log ({server.log_path}) ---\n{server.log_tail()}", file=sys.stderr)
        raise
    finally:
        cli.close()
        server.stop()


def report(recorders: Sequence[Recorder]) -> int:
    mismatched = [(rec, item) for rec in recorders for item in rec.recorded if item.mismatches]
    for rec, item in mismatched:
        print(
            f"\nMISMATCH {rec.cli_version}-{item.name} (update {item.update.id}, "
            f"version {item.update.version}): Procella's export differs from the oracle's",
            file=sys.stderr,
        )
        for line in item.mismatches[:40]:
            print(f"  {line}", file=sys.stderr)
        if len(item.mismatches) > 40:
            print(f"  ... and {len(item.mismatches) - 40} more", file=sys.stderr)
    total = sum(len(rec.recorded) for rec in recorders)
    print(f"\n{total} fixtures recorded, {len(mismatched)} mismatched", flush=True)
    return 1 if mismatched else 0


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwind, so servers and CLIs are stopped


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--cli-version",
        choices=pulumi_toolchain.CLI_VERSIONS,
        default=pulumi_toolchain.DEFAULT_CLI_VERSION,
        help="the pinned CLI to record with (default: %(default)s)",
    )
    which.add_argument("--all", action="store_true", help="record with every pinned CLI")
    parser.add_argument("--out", type=Path, default=FIXTURES_DIR, help="where fixtures go")
    parser.add_argument("--keep", action="store_true", help="keep the work folders")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    pins = pulumi_toolchain.CLI_VERSIONS if args.all else (args.cli_version,)
    oracle = oracle_path()
    recorders = []
    for pin in pins:
        # A short path: it ends up in the fixtures (wait_file inputs).
        work = Path(tempfile.mkdtemp(prefix=f"jf-{pin}-"))
        failed = True
        try:
            recorders.append(record_pin(pin, oracle, work))
            failed = False
        finally:
            if args.keep or failed:
                print(f"work folder kept: {work}", file=sys.stderr)
            else:
                shutil.rmtree(work, ignore_errors=True)
    for rec in recorders:
        for path in rec.write(args.out):
            print(f"wrote {path}")
    return report(recorders)


if __name__ == "__main__":
    sys.exit(main())
