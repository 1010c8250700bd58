"""Prometheus metrics: every metric Procella exports, declared once, and their rendering.

Labels are bounded on purpose: methods (a fixed set), route templates (the URL table,
never a raw path), statuses, kinds, modes, backends and code-chosen names. No stack name,
login, token or id is ever a label: those belong in logs.

With ``procella serve --workers N`` (N > 1) the serve command points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before any worker starts, so
prometheus_client keeps each worker's values in files there and a scrape of any worker
adds them up (``render``). Gauges say how to combine workers (``multiprocess_mode``).
Metrics live in a registry of their own, so an application that mounts ``create_app()``
keeps its default registry to itself.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    multiprocess,
)

# prometheus_client picks its value store when it is imported, from this same variable.
MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
REGISTRY = CollectorRegistry()
if not MULTIPROCESS:
    # CPU and memory of this process; meaningless summed over workers, so single only.
    ProcessCollector(registry=REGISTRY)
    PlatformCollector(registry=REGISTRY)

CONTENT_TYPE = CONTENT_TYPE_LATEST
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_FAST_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 30)
_BYTES = tuple(float(4**n * 256) for n in range(10))  # 256 B .. 64 MiB

# HTTP ---------------------------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "procella_http_requests",
    "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_DURATION = Histogram(
    "procella_http_request_duration_seconds",
    "Time from a request's arrival to the end of its response.",
    ["method", "route", "status"],
    buckets=_SECONDS,
    registry=REGISTRY,
)
HTTP_IN_FLIGHT = Gauge(
    "procella_http_requests_in_flight",
    "Requests being served now.",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
HTTP_BYTES_IN = Counter(
    "procella_http_request_body_bytes",
    "Request body bytes received, as sent (compressed), by method and route template.",
    ["method", "route"],
    registry=REGISTRY,
)
HTTP_BYTES_OUT = Counter(
    "procella_http_response_body_bytes",
    "Response body bytes sent, by method and route template.",
    ["method", "route"],
    registry=REGISTRY,
)
TRANSIENT_ERRORS = Counter(
    "procella_transient_errors",
    "Requests answered 503 (the CLI retries them), by cause.",
    ["cause"],
    registry=REGISTRY,
)

# Updates ------------------------------------------------------------------------------
STEP_BYTES = Histogram(
    "procella_step_stored_bytes",
    "Bytes stored per checkpoint or journal step, by how the CLI sent it (journal, delta, whole).",
    ["mode"],
    buckets=_BYTES,
    registry=REGISTRY,
)
UPDATES_STARTED = Counter(
    "procella_updates_started",
    "Updates started, by kind (update, preview, refresh, destroy).",
    ["kind"],
    registry=REGISTRY,
)
UPDATE_OUTCOMES = Counter(
    "procella_update_outcomes",
    "Updates that ended, by kind and outcome (succeeded, failed, cancelled by the CLI's "
    "complete; aborted by `pulumi cancel`; expired by the GC).",
    ["kind", "outcome"],
    registry=REGISTRY,
)
LEASE_RENEWALS = Counter(
    "procella_lease_renewals",
    "Lease renewals, by result (renewed, refused).",
    ["result"],
    registry=REGISTRY,
)
LEASE_EXPIRIES = Counter(
    "procella_lease_expiries",
    "Updates the GC cancelled because their lease expired.",
    registry=REGISTRY,
)
# Cluster-wide: read from the database at scrape time, the same on every replica.
UPDATES_ACTIVE = Gauge(
    "procella_updates_active",
    "Running updates in the whole deployment, by kind (read from the database at scrape "
    "time: every replica reports the same value, so aggregate with max, not sum).",
    ["kind"],
    multiprocess_mode="mostrecent",
    registry=REGISTRY,
)
LEASES_ACTIVE = Gauge(
    "procella_leases_active",
    "Update leases not yet expired in the whole deployment (read from the database at "
    "scrape time; aggregate with max).",
    multiprocess_mode="mostrecent",
    registry=REGISTRY,
)

# Metadata store -----------------------------------------------------------------------
DB_POOL_SIZE = Gauge(
    "procella_db_pool_connections",
    "Open database connections of this replica's pool (as of its last checkout).",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
DB_POOL_IDLE = Gauge(
    "procella_db_pool_idle_connections",
    "Idle connections in this replica's pool (as of its last checkout).",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
DB_POOL_MAX = Gauge(
    "procella_db_pool_max_connections",
    "Most connections this replica's pool may open.",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
DB_POOL_WAITING = Gauge(
    "procella_db_pool_waiting",
    "Requests waiting for a database connection now.",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
DB_CHECKOUT = Histogram(
    "procella_db_checkout_seconds",
    "Time spent waiting for a database connection (SQLite: a reader or the writer).",
    buckets=_FAST_SECONDS,
    registry=REGISTRY,
)
DB_QUERY = Histogram(
    "procella_db_query_seconds",
    "Database statement latency, by statement (the query function that ran it).",
    ["statement"],
    buckets=_FAST_SECONDS,
    registry=REGISTRY,
)

# Blob store ---------------------------------------------------------------------------
BLOB_OPS = Histogram(
    "procella_blob_operation_seconds",
    "Blob store operations and their latency, by backend, operation and result.",
    ["backend", "operation", "result"],
    buckets=_FAST_SECONDS,
    registry=REGISTRY,
)

# Garbage collector --------------------------------------------------------------------
GC_CYCLES = Counter(
    "procella_gc_cycles",
    "GC attempts, by result: ran, skipped (another replica holds the lock), failed.",
    ["result"],
    registry=REGISTRY,
)
GC_DURATION = Histogram(
    "procella_gc_cycle_duration_seconds",
    "Duration of the GC cycles this replica ran.",
    buckets=_SECONDS,
    registry=REGISTRY,
)
GC_COLLECTED = Counter(
    "procella_gc_collected",
    "What GC cycles collected, by kind of item.",
    ["item"],
    registry=REGISTRY,
)
GC_LOCK_HELD = Gauge(
    "procella_gc_lock_held",
    "1 while this replica holds the cluster-wide GC lock (it runs a cycle), else 0.",
    multiprocess_mode="livemax",
    registry=REGISTRY,
)
GC_LAST_CYCLE = Gauge(
    "procella_gc_last_cycle_timestamp_seconds",
    "When this replica last finished a GC cycle (Unix time); max over replicas shows "
    "whether anyone holds the lock.",
    multiprocess_mode="max",
    registry=REGISTRY,
)


def method_label(method: str) -> str:
    """The method as a label: anything outside the standard set is ``other``."""
    return method if method in KNOWN_METHODS else "other"


def update_kind(kind: str, is_preview: bool) -> str:
    """An update's kind as a label: a dry run of any kind counts as a preview."""
    return "preview" if is_preview else kind


def render() -> bytes:
    """The text exposition of every metric, summed over worker processes if several."""
    if not MULTIPROCESS:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)
