"""The Caddyfile under load-balancing conditions: real Caddy, three stub replicas, one killed.

Validation only proves the file parses; this proves round-robin, that an update's requests
stay on one replica, and that a refused connection costs a retry on another replica, not a
502, even for a request with a body.
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from . import render, tools


class _Replica(http.server.BaseHTTPRequestHandler):
    # HTTP/1.0: one connection per request, so a closed replica refuses the very next dial.
    def do_GET(self) -> None:
        self._answer(b"")

    def do_POST(self) -> None:
        self._answer(self.rfile.read(int(self.headers["Content-Length"])))

    def _answer(self, body: bytes) -> None:
        reply = self.server.name.encode() + b":" + body  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: object) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def replicas() -> Iterator[dict[str, http.server.ThreadingHTTPServer]]:
    servers = {}
    for name in ("r1", "r2", "r3"):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Replica)
        server.name = name  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers[name] = server
    yield servers
    for server in servers.values():
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def _proxy(root: Path, replicas: dict[str, Any], scratch: Path) -> Iterator[str]:
    """Caddy with ``root``'s Caddyfile in front of ``replicas``; yields its URL."""
    port, admin = _free_port(), _free_port()
    upstreams = " ".join(f"127.0.0.1:{s.server_address[1]}" for s in replicas.values())
    env = tools.clean_env(
        XDG_CONFIG_HOME=str(scratch),
        XDG_DATA_HOME=str(scratch),
        CADDY_PORT=str(port),
        CADDY_ADMIN=f"127.0.0.1:{admin}",
        CADDY_UPSTREAMS=upstreams,
    )
    argv = [str(tools.caddy()), "run", "--config", str(render.caddyfile(root))]
    argv += ["--adapter", "caddyfile"]
    log_path = scratch / "caddy.log"
    with log_path.open("w") as log:
        caddy = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_until_serving(url, caddy, log_path)
            yield url
        finally:
            caddy.terminate()
            caddy.wait(timeout=10)


def _wait_until_serving(url: str, caddy: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if caddy.poll() is not None:
            pytest.fail(f"caddy exited with {caddy.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"caddy did not serve {url} within 15 s:\n{log.read_text()}")


def _call(url: str, body: bytes | None = None, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url + "/api/x", data=body, method="POST" if body else "GET")
    if token is not None:
        request.add_header("Authorization", f"update-token {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _kill_one_and_post(url: str, replicas: dict[str, Any]) -> list[tuple[int, str]]:
    replicas["r2"].shutdown()
    replicas["r2"].server_close()
    return [_call(url, b"checkpoint-%d" % i) for i in range(6)]


def test_round_robin_and_no_502_when_a_replica_dies(
    repo: Path, replicas: dict[str, Any], tmp_path: Path
) -> None:
    with _proxy(repo, replicas, tmp_path) as url:
        seen = [_call(url)[1].split(":")[0] for _ in range(6)]
        assert sorted(set(seen)) == ["r1", "r2", "r3"], seen
        answers = _kill_one_and_post(url, replicas)
    assert all(status == 200 for status, _ in answers), answers
    # Every body arrived whole at a live replica, including the one that was retried.
    assert [text.split(":", 1)[1] for _, text in answers] == [f"checkpoint-{i}" for i in range(6)]
    assert {text.split(":")[0] for _, text in answers} <= {"r1", "r3"}


def test_an_updates_requests_stay_on_one_replica_until_it_dies(
    repo: Path, replicas: dict[str, Any], tmp_path: Path
) -> None:
    leases = [f"lease-{i}" for i in range(12)]
    with _proxy(repo, replicas, tmp_path) as url:
        home = {}
        for lease in leases:
            served = {_call(url, b"step", lease)[1].split(":")[0] for _ in range(4)}
            assert len(served) == 1, (lease, served)
            home[lease] = served.pop()
        assert len(set(home.values())) >= 2, home  # the leases spread over the replicas
        # Requests without a lease still go round every replica.
        assert {_call(url)[1].split(":")[0] for _ in range(6)} == {"r1", "r2", "r3"}
        moved = [lease for lease in leases if home[lease] == "r2"]
        replicas["r2"].shutdown()
        replicas["r2"].server_close()
        after = {lease: [_call(url, b"step", lease) for _ in range(3)] for lease in leases}
    for lease, answers in after.items():
        assert all(status == 200 for status, _ in answers), (lease, answers)
        served = {text.split(":")[0] for _, text in answers}
        # An update on a live replica stays there; one on the dead replica moves to one other.
        assert served == ({home[lease]} if lease not in moved else served - {"r2"}), served
        assert len(served) == 1, (lease, served)


def test_a_copy_without_retries_answers_502(
    copy: Path, edit, replicas: dict[str, Any], tmp_path: Path
) -> None:
    edit(render.caddyfile(copy), "lb_try_duration 5s\n", "")
    with _proxy(copy, replicas, tmp_path) as url:
        # Six POSTs go round every replica at least once, the dead one included.
        _call(url)
        answers = _kill_one_and_post(url, replicas)
    assert 502 in [status for status, _ in answers], answers
