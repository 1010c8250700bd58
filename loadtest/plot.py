"""Throughput and p95 latency against users, one line per topology (and code revision),
from the summary.json of one or more runs of run.py:

    ~/.cache/procella/loadvenv/bin/python loadtest/plot.py OUT/summary.json -o loadtest/load.png

Run it with the load venv's Python: matplotlib is in loadtest/requirements.txt.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt


def series(runs: list[dict[str, Any]]) -> dict[str, list[tuple[int, float, int]]]:
    """(users, req/s, p95 ms) per line, sorted by users."""
    lines: dict[str, list[tuple[int, float, int]]] = defaultdict(list)
    codes = {run["options"].get("code", "") for run in runs}
    for run in runs:
        label = run["topology"]
        if len(codes) > 1:
            label += f" @ {run['options'].get('code', '')[:8]}"
        lines[label].append((run["users"], run["rps"], run["locust"]["total"]["p95"]))
    return {label: sorted(points) for label, points in sorted(lines.items())}


def plot(runs: list[dict[str, Any]], out: Path, title: str) -> None:
    fig, (throughput, latency) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, points in series(runs).items():
        users = [p[0] for p in points]
        throughput.plot(users, [p[1] for p in points], marker="o", label=label)
        latency.plot(users, [p[2] for p in points], marker="o", label=label)
    throughput.set(xlabel="users", ylabel="requests per second", title="Throughput")
    latency.set(xlabel="users", ylabel="p95 latency (ms)", title="p95 latency, all routes")
    for axes in (throughput, latency):
        axes.grid(alpha=0.3)
        axes.set_ylim(bottom=0)
        axes.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("summaries", nargs="+", type=Path, help="summary.json files of run.py")
    p.add_argument("-o", "--out", type=Path, default=Path("load.png"))
    p.add_argument("--title", default="Procella under Locust load (2 cores, everything local)")
    args = p.parse_args(argv)
    runs = [run for path in args.summaries for run in json.loads(path.read_text())]
    plot(runs, args.out, args.title)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
