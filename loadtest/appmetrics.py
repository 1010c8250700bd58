"""Procella's own view of its database work during a run, from every replica's /metrics:
how many statements it ran, how long they took as the replica saw them (round trip
included), and how long requests waited for a connection. PostgreSQL's statistics say what
the database did; these say what the replicas waited for.

Standard library only: the Prometheus text format is read line by line.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterable

# name in the report -> the sample summed over every replica and label set
SAMPLES = {
    "statements": "procella_db_query_seconds_count",
    "statement_seconds": "procella_db_query_seconds_sum",
    "checkouts": "procella_db_checkout_seconds_count",
    "checkout_seconds": "procella_db_checkout_seconds_sum",
    "requests": "procella_http_requests_total",
}


def scrape(urls: Iterable[str]) -> dict[str, float]:
    """The sums of ``SAMPLES`` over every replica now; a replica that does not answer is
    left out (the report then undercounts, and says so through a lower request count)."""
    totals = dict.fromkeys(SAMPLES, 0.0)
    wanted = {sample: name for name, sample in SAMPLES.items()}
    for url in urls:
        try:
            with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
                text = response.read().decode()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("#") or " " not in line:
                continue
            series, _, value = line.rpartition(" ")
            name = wanted.get(series.split("{", 1)[0])
            if name is not None:
                totals[name] += float(value)
    return totals


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before.get(name, 0.0) for name in after}
