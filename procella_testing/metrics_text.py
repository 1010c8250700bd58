"""Reading Prometheus text exposition in tests: samples by name and labels, and sums."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape, keyed by (sample name, its labels)."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name`` over every sample whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def add(scrapes: Iterable[Samples]) -> Samples:
    """Several replicas' scrapes added up, as a Prometheus ``sum`` would."""
    summed: Samples = {}
    for samples in scrapes:
        for key, value in samples.items():
            summed[key] = summed.get(key, 0.0) + value
    return summed


def label_values(samples: Samples, label: str) -> set[str]:
    return {v for (_, ls) in samples for k, v in ls if k == label}


def delta(
    before: Mapping[tuple[str, frozenset[tuple[str, str]]], float], after: Samples
) -> Samples:
    """What moved between two scrapes (metrics are per process, shared by the tests)."""
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}
