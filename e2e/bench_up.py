"""Benchmark: `pulumi up` of N dynamic resources against Procella and against a file backend.

    python e2e/bench_up.py [--resources 100] [--repeat 3] [--delta on|off] [--cutoff BYTES]

Starts a fresh `procella serve` (embedded default: SQLite + local blobs) and a fresh
`file://` backend, then runs `pulumi up --yes --skip-preview` of the `bulk` scenario of
programs/things (N independent resources) on a new stack R times against each, alternating
the two so machine noise hits both alike. Prints every run, the medians and the ratio
procella/file. The toolchain is built first if needed (see pulumi_toolchain.py).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import pulumi_toolchain
from e2e_harness import ProcellaServer, PulumiCLI, Stack, expect_ok, make_project

PROJECT = "bench"
ORG = "organization"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--resources", type=int, default=100, help="resources per stack")
    parser.add_argument("--repeat", type=int, default=3, help="runs against each backend")
    parser.add_argument(
        "--delta",
        choices=("on", "off"),
        default="on",
        help="Procella advertises delta checkpoints (PROCELLA_DELTA_CHECKPOINTS)",
    )
    parser.add_argument(
        "--cutoff",
        type=int,
        default=None,
        help="PROCELLA_DELTA_CHECKPOINT_CUTOFF_BYTES (default: the server's)",
    )
    return parser.parse_args(argv)


def timed_up(stack: Stack, resources: int) -> float:
    """Create a fresh stack of the bulk program and time its `pulumi up`."""
    stack.init()
    stack.ok("config", "set", "scenario", "bulk")
    stack.ok("config", "set", "count", str(resources))
    started = time.perf_counter()
    result = stack.cli.run("up", "--yes", "--skip-preview", "--stack", stack.name, cwd=stack.cwd)
    elapsed = time.perf_counter() - started
    expect_ok(result)
    return elapsed


def run(args: argparse.Namespace, work: Path) -> int:
    toolchain = pulumi_toolchain.ensure_toolchain(verbose=True)
    project = make_project("things", PROJECT, work)
    cutoff = args.cutoff
    server = ProcellaServer(
        work / "procella-data", mode="delta" if args.delta == "on" else "full", cutoff_bytes=cutoff
    )
    server.start()
    try:
        procella = PulumiCLI(
            toolchain,
            work / "home-procella",
            backend_url=server.url,
            token=server.admin_token,
            cwd=project,
            timeout=1800,
        )
        procella.login()
        (work / "state").mkdir()
        diy = PulumiCLI(
            toolchain,
            work / "home-file",
            backend_url=f"file://{work / 'state'}",
            token=None,
            cwd=project,
            extra_env={"PULUMI_CONFIG_PASSPHRASE": "benchmark"},
            timeout=1800,
        )
        diy.login()
        times: dict[str, list[float]] = {"procella": [], "file": []}
        for index in range(args.repeat):
            for backend, cli in (("procella", procella), ("file", diy)):
                stack = Stack(cli, f"{ORG}/{PROJECT}/run{index}", project)
                seconds = timed_up(stack, args.resources)
                times[backend].append(seconds)
                print(f"{backend:8} run {index + 1}: {seconds:7.2f} s", flush=True)
    finally:
        server.stop()
    report(times, args)
    return 0


def report(times: dict[str, list[float]], args: argparse.Namespace) -> None:
    procella, file = (statistics.median(times[name]) for name in ("procella", "file"))
    delta = f"delta {args.delta}" + (f", cutoff {args.cutoff} B" if args.cutoff is not None else "")
    print(f"\npulumi up of {args.resources} resources, {args.repeat} runs each ({delta})")
    print(f"median procella: {procella:7.2f} s")
    print(f"median file:     {file:7.2f} s")
    print(f"ratio procella/file: {procella / file:.2f}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.resources < 1 or args.repeat < 1:
        print("--resources and --repeat must be at least 1", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="procella-bench-") as work:
        return run(args, Path(work))


if __name__ == "__main__":
    sys.exit(main())
