"""``procella serve`` observed from outside: a metrics listener of its own, JSON logs with
request ids, and metrics summed over worker processes."""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from procella_testing.metrics_text import parse, total
from procella_testing.processes import free_port
from tests.conftest import ADMIN_TOKEN
from tests.test_serve import Server, start_server

# Each test starts `procella serve` processes: seconds apiece.
pytestmark = pytest.mark.slow


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            headers = response.headers
            return response.status, response.read(), {k.lower(): v for k, v in headers.items()}
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), {k.lower(): v for k, v in exc.headers.items()}


def stop(server: Server) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=30)
        except Exception:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait()


@pytest.fixture
def metrics_server(tmp_path: Path) -> Iterator[tuple[Server, int]]:
    port = free_port()
    found = start_server(
        tmp_path,
        PROCELLA_METRICS_LISTEN_ADDR=f"127.0.0.1:{port}",
        PROCELLA_LOG_FORMAT="json",
        PROCELLA_LOG_LEVEL="INFO",
    )
    try:
        yield found, port
    finally:
        stop(found)


def test_metrics_on_their_own_listener_and_json_logs(metrics_server: tuple[Server, int]) -> None:
    server, port = metrics_server
    auth = {"Authorization": f"token {ADMIN_TOKEN}"}
    status, _, headers = fetch(server.url("/api/user"), {**auth, "X-Request-Id": "serve-test-1"})
    assert status == 200 and headers["x-request-id"] == "serve-test-1"
    # Scraped on the metrics port only; nothing else is served there.
    status, body, _ = fetch(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    samples = parse(body.decode())
    assert total(samples, "procella_http_requests_total", route="/api/user", status="200") == 1
    assert fetch(server.url("/metrics"))[0] == 404
    assert fetch(f"http://127.0.0.1:{port}/api/user", auth)[0] == 404
    stop(server)
    lines = [json.loads(line) for line in server.log.read_text().splitlines() if line.strip()]
    # One line for the request (nothing else logs during it), with the id it was sent.
    (access,) = [line for line in lines if line.get("request_id") == "serve-test-1"]
    assert access["logger"] == "procella.access" and access["level"] == "INFO"
    assert access["route"] == "/api/user" and access["login"] == "admin"
    assert access["status"] == 200 and access["bytes_out"] > 0
    # No library writes a line per request or connection at INFO.
    assert not [line for line in lines if line["logger"].startswith(("psycopg", "aiosqlite"))]


def _multiproc_dir(server: Server) -> Path:
    """The metrics directory `procella serve` gave its workers (from a worker's environment)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) != server.process.pid:
            continue
        for item in environ:
            if item.startswith(b"PROMETHEUS_MULTIPROC_DIR="):
                return Path(item.split(b"=", 1)[1].decode())
    raise AssertionError("no worker with PROMETHEUS_MULTIPROC_DIR")


def _requests_per_worker(directory: Path) -> list[float]:
    """/api/user requests each worker counted, read from its own counter file."""
    counts = []
    for db in sorted(directory.glob("counter_*.db")):
        with tempfile.TemporaryDirectory() as alone:
            (Path(alone) / db.name).write_bytes(db.read_bytes())
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=alone)
            samples = parse(generate_latest(registry).decode())
        counts.append(total(samples, "procella_http_requests_total", route="/api/user"))
    return counts


def test_metrics_add_up_over_worker_processes(tmp_path: Path) -> None:
    server = start_server(tmp_path, PROCELLA_WORKERS="2")
    auth = {"Authorization": f"token {ADMIN_TOKEN}"}
    try:
        directory = _multiproc_dir(server)
        sent = 0
        deadline = time.monotonic() + 60
        # A new connection each time: the kernel hands them to either worker.
        while sum(1 for n in _requests_per_worker(directory) if n) < 2:
            assert time.monotonic() < deadline, "one worker served every request"
            for _ in range(10):
                assert fetch(server.url("/api/user"), auth)[0] == 200
                sent += 1
        for _ in range(6):  # whichever worker answers the scrape reports the sum
            samples = parse(fetch(server.url("/metrics"))[1].decode())
            assert total(samples, "procella_http_requests_total", route="/api/user") == sent
        stop(server)
        assert server.process.returncode == 0
        assert not directory.exists()  # removed when the server exits
    finally:
        if server.process.poll() is None:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait()
