"""Build the pinned Pulumi CLIs, their Python language host and Python SDK, once per machine.

Run ``python -m procella_testing.pulumi_toolchain [--version X | --all]`` from the repository
root to build (or find) the toolchain of one pinned CLI version (default: DEFAULT_CLI_VERSION)
or of all of them and print the folders; ``ensure_toolchain(version)`` does the same for the
e2e conftest. Each pin (CLI_PINS) is a wrapper Go module in e2e/: pulumi-cli/ for the
default, pulumi-cli-v<version>/ for the compatibility pins the suite also runs against. A
toolchain folder is

    ${PROCELLA_CACHE_DIR:-~/.cache/procella}/pulumi-toolchain-v<version>-<hash>/
        bin/   pulumi, pulumi-language-python, pulumi-language-python-exec,
               pulumi-resource-pulumi-python, pulumi-analyzer-policy-python,
               pulumi-journal-replay (pins with the oracle, see below)
        venv/  the `pulumi` Python SDK from PyPI (the pin's sdk_version)
        wheels/  `wheel` and its dependencies, for offline `pulumi new` (see below)
        toolchain.json

where <hash> covers the pin's wrapper module (go.mod, go.sum, Go sources), the host module's
go.mod/go.sum, the SDK version and TOOLCHAIN_REVISION, so a change to a pin (or to how this
script builds) lands in a new folder. The build happens in a temporary sibling folder that is
renamed into place, under an fcntl lock, so parallel callers (pytest-xdist workers, CI jobs
sharing a cache) build once and never see a half-built folder.

pulumi-journal-replay (journalreplay/ in the default wrapper module) is a test oracle: it
replays journal entries with the CLI's own backend.JournalReplayer (see its main.go).

Why the host has a Go module of its own, shared by all pins: the Python language host moved
into a module of its own (github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3)
that the Go module proxy does not serve, so the host is built from the newest sdk/v3 release
that still contains it (v3.68.0). The engine falls back on Unimplemented RPCs for such older
hosts. The old host ignores the `virtualenv` runtime option, so programs use plain
`runtime: python` and the CLI runs with ``path_entries()`` first on PATH, which makes `python3`
the toolchain venv's. The old host's dependency install (run by `pulumi new`) always creates a venv
in the project and upgrades pip, setuptools and wheel in it; ``offline_pip_env()`` points pip
at wheels/ so that works without an index.

Standard library only: it runs before any dependency is installed.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

LANGUAGE_HOST_VERSION = "3.68.0"
# Bump when the build recipe changes, so existing caches are not reused.
TOOLCHAIN_REVISION = "3"

# The wrapper Go modules live with the suite that drives the CLI.
E2E_DIR = Path(__file__).resolve().parent.parent / "e2e"
HOST_MODULE_DIR = E2E_DIR / "pulumi-language-python"


@dataclass(frozen=True)
class CliPin:
    """One pinned pulumi CLI: the wrapper Go module that builds it and the SDK that goes with it."""

    version: str
    module_dir: Path
    # The `pulumi` release on PyPI. It trails the Go module proxy (no wheels are published for
    # some CLI releases), so it is the newest release not newer than the CLI; the SDK talks to
    # the engine over its stable gRPC interface, so a slightly older SDK is fine.
    sdk_version: str
    # Whether the wrapper module has journalreplay/ (the pulumi-journal-replay oracle).
    journal_replay: bool = False


# The first pin is the default; the others are compatibility pins (older CLIs in the field).
CLI_PINS = (
    CliPin("3.276.0", E2E_DIR / "pulumi-cli", sdk_version="3.272.0", journal_replay=True),
    CliPin("3.259.0", E2E_DIR / "pulumi-cli-v3.259.0", sdk_version="3.259.0"),
)
CLI_VERSIONS = tuple(pin.version for pin in CLI_PINS)
DEFAULT_CLI_VERSION = CLI_VERSIONS[0]

CLI_PACKAGE = "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"
JOURNAL_REPLAY_PACKAGE = "./journalreplay"
HOST_PACKAGE = "github.com/pulumi/pulumi/sdk/v3/python/cmd/pulumi-language-python"
SDK_MODULE = "github.com/pulumi/pulumi/sdk/v3"
VERSION_SYMBOL = "github.com/pulumi/pulumi/sdk/v3/go/common/version.Version"

EXECUTABLES = (
    "pulumi",
    "pulumi-language-python",
    "pulumi-language-python-exec",
    "pulumi-resource-pulumi-python",
    "pulumi-analyzer-policy-python",
)
JOURNAL_REPLAY_EXECUTABLE = "pulumi-journal-replay"
# Scripts shipped next to the binaries: (path inside the sdk/v3 module, may come from the host's
# older sdk). The policy analyzer shim is gone from recent sdk releases; policy packs are not
# used by the e2e suite, so the host's copy is good enough to keep the layout complete.
SCRIPTS = (
    "python/cmd/pulumi-language-python-exec",
    "python/dist/pulumi-resource-pulumi-python",
    "python/dist/pulumi-analyzer-policy-python",
)


class ToolchainError(RuntimeError):
    """The toolchain cannot be built on this machine; the message says why."""


def cache_root() -> Path:
    configured = os.environ.get("PROCELLA_CACHE_DIR")
    root = Path(configured) if configured else Path.home() / ".cache" / "procella"
    return root.expanduser().resolve()


def cli_pin(version: str | None = None) -> CliPin:
    """The pin of `version` (None: the default one)."""
    wanted = version or DEFAULT_CLI_VERSION
    for pin in CLI_PINS:
        if pin.version == wanted:
            return pin
    raise ToolchainError(f"no pinned pulumi CLI {wanted!r}; the pins are {', '.join(CLI_VERSIONS)}")


def toolchain_hash(pin: CliPin) -> str:
    digest = hashlib.sha256()
    header = f"revision={TOOLCHAIN_REVISION};cli={pin.version};sdk={pin.sdk_version}\n"
    digest.update(header.encode())
    # The whole wrapper module (the oracle's sources too), but only the host's module files.
    cli_files = [pin.module_dir / "go.mod", pin.module_dir / "go.sum"]
    cli_files += sorted(pin.module_dir.rglob("*.go"))
    host_files = [HOST_MODULE_DIR / "go.mod", HOST_MODULE_DIR / "go.sum"]
    for path in (*cli_files, *host_files):
        digest.update(f"{path.relative_to(E2E_DIR)}\n".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def toolchain_dir(pin: CliPin) -> Path:
    return cache_root() / f"pulumi-toolchain-v{pin.version}-{toolchain_hash(pin)}"


def bin_dir(root: Path) -> Path:
    return root / "bin"


def venv_bin_dir(root: Path) -> Path:
    return root / "venv" / "bin"


def wheels_dir(root: Path) -> Path:
    return root / "wheels"


def offline_pip_env(root: Path) -> dict[str, str]:
    """pip settings under which the old language host's dependency install needs no index."""
    return {
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(wheels_dir(root)),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }


def path_entries(root: Path) -> list[str]:
    """What goes first on PATH for the CLI: the venv (so `python3` has the SDK), then bin/."""
    return [str(venv_bin_dir(root)), str(bin_dir(root))]


def executables(pin: CliPin) -> tuple[str, ...]:
    return (*EXECUTABLES, JOURNAL_REPLAY_EXECUTABLE) if pin.journal_replay else EXECUTABLES


def is_complete(root: Path, pin: CliPin) -> bool:
    if not (root / "toolchain.json").is_file() or not wheels_dir(root).is_dir():
        return False
    return all(os.access(bin_dir(root) / name, os.X_OK) for name in executables(pin))


def ensure_toolchain(version: str | None = None, *, verbose: bool = False) -> Path:
    """The built toolchain folder of CLI `version` (None: the default pin); builds it first if
    this machine has none."""
    pin = cli_pin(version)
    final = toolchain_dir(pin)
    if is_complete(final, pin):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(final.with_name(final.name + ".lock"), verbose=verbose):
        # Another process may have finished the build while this one waited.
        if is_complete(final, pin):
            return final
        _remove_stale(final)
        _build(pin, final, verbose=verbose)
    return final


@contextlib.contextmanager
def _exclusive_lock(path: Path, *, verbose: bool) -> Iterator[None]:
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _log(f"waiting for another process building the toolchain ({path})", verbose=verbose)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_stale(final: Path) -> None:
    """Drop leftovers of a build that crashed (we hold the lock, so nobody else is building)."""
    for leftover in final.parent.glob(final.name + ".tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    if final.exists():  # incomplete: no manifest or missing executables
        shutil.rmtree(final)


def _build(pin: CliPin, final: Path, *, verbose: bool) -> None:
    go = _check_go(pin)
    work = Path(tempfile.mkdtemp(dir=final.parent, prefix=final.name + ".tmp-"))
    work.chmod(0o755)  # mkdtemp makes it private; the cache may be shared (CI, other users)
    try:
        started = time.monotonic()
        out = bin_dir(work)
        out.mkdir()
        env = _go_env()
        _log("building pulumi-language-python (sdk v" + LANGUAGE_HOST_VERSION + ")", verbose)
        host = out / HOST_PACKAGE.rsplit("/", 1)[1]
        _go_build(go, HOST_MODULE_DIR, HOST_PACKAGE, LANGUAGE_HOST_VERSION, host, env, [])
        _log(f"building pulumi v{pin.version} (takes a few minutes)", verbose)
        tags = ["-tags", "osusergo,grpcnotrace"]
        _go_build(go, pin.module_dir, CLI_PACKAGE, pin.version, out / "pulumi", env, tags)
        if pin.journal_replay:
            # Same module, version stamp and tags as the CLI: it reuses the CLI's build cache and
            # stamps the manifests it generates like the CLI does.
            _log(f"building {JOURNAL_REPLAY_EXECUTABLE}", verbose)
            oracle = out / JOURNAL_REPLAY_EXECUTABLE
            _go_build(go, pin.module_dir, JOURNAL_REPLAY_PACKAGE, pin.version, oracle, env, tags)
        _copy_scripts(go, pin, out, env)
        _log(f"creating the venv with pulumi=={pin.sdk_version} from PyPI", verbose)
        _make_venv(work / "venv", wheels_dir(work), pin.sdk_version)
        _relocate_venv(work / "venv", final / "venv")
        manifest = {
            "cli_version": pin.version,
            "sdk_version": pin.sdk_version,
            "language_host_version": LANGUAGE_HOST_VERSION,
            "revision": TOOLCHAIN_REVISION,
            "built_seconds": round(time.monotonic() - started, 1),
        }
        (work / "toolchain.json").write_text(json.dumps(manifest, indent=2) + "\n")
        os.rename(work, final)  # atomic: readers see nothing or everything
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def required_go_version(pin: CliPin) -> tuple[int, int, int]:
    """The newest `go` directive of the modules a pin builds: pulumi raises it over time, and
    `go mod tidy` copies it into the wrapper's go.mod."""
    versions = []
    for module_dir in (pin.module_dir, HOST_MODULE_DIR):
        text = (module_dir / "go.mod").read_text()
        match = re.search(r"^go (\S+)$", text, re.MULTILINE)
        version = parse_go_version("go" + match.group(1)) if match else None
        if version is None:
            raise ToolchainError(f"{module_dir / 'go.mod'} has no `go` directive")
        versions.append(version)
    return max(versions)


def _check_go(pin: CliPin) -> str:
    required = required_go_version(pin)
    needed = ".".join(map(str, required))
    go = shutil.which("go")
    if go is None:
        raise ToolchainError(
            "`go` is not on PATH. The e2e suite builds the Pulumi CLI from source and needs Go "
            f">= {needed} (https://go.dev/dl/)."
        )
    reported = _run([go, "env", "GOVERSION"], cwd=E2E_DIR, env=_go_env()).strip()
    version = parse_go_version(reported)
    if version is None or version < required:
        raise ToolchainError(
            f"{go} is {reported or 'of unknown version'}; building pulumi v{pin.version} needs "
            f"Go >= {needed}."
        )
    return go


def parse_go_version(text: str) -> tuple[int, int, int] | None:
    """`go1.26.8` -> (1, 26, 8); `go1.25` -> (1, 25, 0); pre-releases count as the .0 release."""
    match = re.match(r"go(\d+)\.(\d+)(?:\.(\d+))?", text)
    if match is None:
        return None
    major, minor, patch = match.groups()
    return (int(major), int(minor), int(patch or 0))


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    # Never let `go` fetch another toolchain: the version check above is the contract.
    env["GOTOOLCHAIN"] = "local"
    # go.sum is complete; refuse to edit go.mod/go.sum behind the developer's back. The oracle's
    # main package lives in this repository: keep its build independent of the git state.
    env["GOFLAGS"] = (env.get("GOFLAGS", "") + " -mod=readonly -buildvcs=false").strip()
    env.setdefault("CGO_ENABLED", "0")
    return env


def _go_build(
    go: str,
    module_dir: Path,
    package: str,
    version: str,
    target: Path,
    env: dict[str, str],
    extra: Sequence[str],
) -> None:
    ldflags = f"-w -s -X {VERSION_SYMBOL}=v{version}"
    cmd = [go, "build", "-trimpath", *extra, "-ldflags", ldflags, "-o", str(target), package]
    _run(cmd, cwd=module_dir, env=env)


def _module_dir(go: str, module_dir: Path, module: str, env: dict[str, str]) -> Path:
    """Where the module cache holds `module` (run inside the wrapper so go.sum verifies it)."""
    info = json.loads(_run([go, "mod", "download", "-json", module], cwd=module_dir, env=env))
    if info.get("Error") or not info.get("Dir"):
        raise ToolchainError(f"go mod download {module}: {info.get('Error', 'no Dir')}")
    return Path(info["Dir"])


def _copy_scripts(go: str, pin: CliPin, out: Path, env: dict[str, str]) -> None:
    sdk = _module_dir(go, pin.module_dir, f"{SDK_MODULE}@v{pin.version}", env)
    host_sdk = _module_dir(go, HOST_MODULE_DIR, f"{SDK_MODULE}@v{LANGUAGE_HOST_VERSION}", env)
    for relative in SCRIPTS:
        source = sdk / relative
        if not source.is_file():
            source = host_sdk / relative
        if not source.is_file():
            raise ToolchainError(f"{relative} is in neither sdk/v3 module ({sdk}, {host_sdk})")
        target = out / source.name
        # The module cache is read-only; copy the bytes, not the mode, then make it executable.
        shutil.copyfile(source, target)
        target.chmod(0o755)


def _make_venv(venv: Path, wheels: Path, sdk_version: str) -> None:
    env = dict(os.environ)
    _run([sys.executable, "-m", "venv", str(venv)], cwd=E2E_DIR, env=env)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "--quiet"]
    _run([*pip, "install", f"pulumi=={sdk_version}"], cwd=E2E_DIR, env=env)
    # A fresh venv already has pip and setuptools; `wheel` (and what it needs) is the only
    # download the host's "upgrade pip, setuptools and wheel" step cannot do without.
    download = [*pip, "download", "--only-binary=:all:", "--dest", str(wheels), "wheel"]
    _run(download, cwd=E2E_DIR, env=env)


def _relocate_venv(venv: Path, final_venv: Path) -> None:
    """Point the venv's scripts at the folder it is renamed to.

    Python finds a venv from its own location, so `venv/bin/python3` works anywhere; only the
    absolute paths written into activate scripts and console-script shebangs (pip, ...) name
    the temporary folder.
    """
    old, new = str(venv).encode(), str(final_venv).encode()
    for script in (venv / "bin").iterdir():
        if script.is_symlink() or not script.is_file():
            continue
        data = script.read_bytes()
        if old in data and b"\0" not in data[:1024]:
            script.write_bytes(data.replace(old, new))


def _run(cmd: Sequence[str], *, cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(
        list(cmd), cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip()[-4000:]
        raise ToolchainError(f"`{' '.join(cmd)}` failed (exit {result.returncode}):\n{tail}")
    return result.stdout


def _log(message: str, verbose: bool) -> None:
    if verbose:
        print(f"pulumi_toolchain: {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--version",
        choices=CLI_VERSIONS,
        default=DEFAULT_CLI_VERSION,
        help="the pinned CLI version to build (default: %(default)s)",
    )
    which.add_argument("--all", action="store_true", help="build every pinned CLI version")
    args = parser.parse_args(argv)
    versions = CLI_VERSIONS if args.all else (args.version,)
    for version in versions:
        try:
            root = ensure_toolchain(version, verbose=not args.quiet)
        except ToolchainError as exc:
            print(f"pulumi_toolchain: error: {exc}", file=sys.stderr)
            return 1
        print(root, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
