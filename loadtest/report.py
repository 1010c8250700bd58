"""Locust's results, read from its --json-file and --csv output (standard library only).

Percentiles are computed from the response-time histogram in the JSON file, the way
locust computes them; the JSON is exact where the CSV can lag a second behind.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Route:
    method: str
    name: str
    requests: int
    failures: int
    p50: int
    p95: int
    p99: int
    max_ms: float
    mean_ms: float


@dataclass(frozen=True)
class LocustResult:
    routes: list[Route]
    total: Route
    seconds: float  # first request to last

    @property
    def rps(self) -> float:
        return self.total.requests / self.seconds if self.seconds > 0 else 0.0


def percentile(histogram: dict[int, int], count: int, fraction: float) -> int:
    """locust's calculate_response_time_percentile: the smallest bucket that covers it."""
    wanted = int(count * fraction)
    processed = 0
    for bucket in sorted(histogram, reverse=True):
        processed += histogram[bucket]
        if count - processed <= wanted:
            return bucket
    return 0


def _route(method: str, name: str, entries: list[dict[str, Any]]) -> Route:
    histogram: dict[int, int] = {}
    for entry in entries:
        for bucket, n in entry["response_times"].items():
            histogram[int(float(bucket))] = histogram.get(int(float(bucket)), 0) + n
    requests = sum(e["num_requests"] for e in entries)
    total_time = sum(e["total_response_time"] for e in entries)
    return Route(
        method=method,
        name=name,
        requests=requests,
        failures=sum(e["num_failures"] for e in entries),
        p50=percentile(histogram, requests, 0.50),
        p95=percentile(histogram, requests, 0.95),
        p99=percentile(histogram, requests, 0.99),
        max_ms=max((e["max_response_time"] or 0 for e in entries), default=0),
        mean_ms=total_time / requests if requests else 0.0,
    )


def load(json_path: Path) -> LocustResult:
    entries: list[dict[str, Any]] = json.loads(json_path.read_text())
    routes = [_route(e["method"], e["name"], [e]) for e in entries]
    routes.sort(key=lambda r: r.requests * r.mean_ms, reverse=True)  # most time first
    starts = [e["start_time"] for e in entries if e["num_requests"]]
    ends = [e["last_request_timestamp"] for e in entries if e["last_request_timestamp"]]
    seconds = max(ends) - min(starts) if starts and ends else 0.0
    return LocustResult(routes, _route("", "all routes", entries), seconds)


def failures(csv_path: Path, limit: int = 8) -> list[tuple[int, str]]:
    """The most frequent failure messages: (occurrences, "METHOD name: error")."""
    if not csv_path.exists():
        return []
    with csv_path.open(newline="") as f:
        rows = [
            (int(row["Occurrences"]), f"{row['Method']} {row['Name']}: {row['Error']}")
            for row in csv.DictReader(f)
        ]
    return sorted(rows, reverse=True)[:limit]


def route_table(result: LocustResult) -> list[str]:
    lines = [
        f"{'route':<64} {'reqs':>7} {'fail':>5} {'p50':>6} {'p95':>6} {'p99':>6} {'max':>7}  (ms)"
    ]
    for r in [*result.routes, result.total]:
        name = f"{r.method} {r.name}".strip()
        lines.append(
            f"{name:<64} {r.requests:>7} {r.failures:>5} {r.p50:>6} {r.p95:>6} {r.p99:>6} "
            f"{r.max_ms:>7.0f}"
        )
    return lines
