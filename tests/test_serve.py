"""``procella serve`` as users run it: a real process, real sockets, real signals."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from subprocess import Popen
from typing import BinaryIO

import pytest

from procella.api.responses import RESPONSE_PIECE_BYTES
from procella_testing.processes import free_port
from tests.conftest import ADMIN_TOKEN

# Each test starts `procella serve` processes: seconds apiece.
pytestmark = pytest.mark.slow


class Server:
    def __init__(self, process: Popen[bytes], port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.log = log

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str, token: str | None = ADMIN_TOKEN) -> tuple[int, bytes]:
        request = urllib.request.Request(self.url(path))
        if token:
            request.add_header("Authorization", f"token {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()


def start_server(tmp_path: Path, **env: str) -> Server:
    port = free_port()
    log = tmp_path / "server.log"
    with log.open("wb") as log_file:
        process = _spawn(port, tmp_path, log_file, env)
    server = Server(process, port, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited early:\n{log.read_text()}")
        try:
            if server.get("/healthz", None)[0] == 200:
                return server
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"server did not come up:\n{log.read_text()}")


def _spawn(port: int, tmp_path: Path, log_file: BinaryIO, env: dict[str, str]) -> Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "procella", "serve"],
        env={
            **os.environ,
            "PROCELLA_LISTEN_ADDR": f"127.0.0.1:{port}",
            "PROCELLA_DATA_DIR": str(tmp_path / "data"),
            "PROCELLA_ADMIN_TOKEN": ADMIN_TOKEN,
            **env,
        },
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: we can end it and all it started
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    found = start_server(tmp_path, PROCELLA_SHUTDOWN_TIMEOUT_SECONDS="20")
    try:
        yield found
    finally:
        if found.process.poll() is None:
            os.killpg(found.process.pid, signal.SIGKILL)
            found.process.wait()


def test_serve_answers_the_cli_calls(server: Server) -> None:
    status, body = server.get("/api/user")
    assert status == 200 and json.loads(body)["githubLogin"] == "admin"
    assert server.get("/readyz")[0] == 200


def test_a_large_export_is_sent_whole_with_its_length(server: Server) -> None:
    # Over RESPONSE_PIECE_BYTES the answer goes out a piece at a time; the CLI must still
    # get one body of the declared length, not a chunked one.
    resource = {"urn": "urn:pulumi:dev::web::t::r", "type": "t", "outputs": {"v": "x" * 4096}}
    state = json.dumps(
        {"version": 3, "deployment": {"manifest": {}, "resources": [resource] * 800}}
    ).encode()
    assert len(state) > 3 * RESPONSE_PIECE_BYTES
    create = urllib.request.Request(
        server.url("/api/stacks/acme/web"),
        data=b'{"stackName":"dev","state":' + state + b"}",
        headers={"Authorization": f"token {ADMIN_TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(create, timeout=10) as response:
        assert response.status == 200
    export = urllib.request.Request(server.url("/api/stacks/acme/web/dev/export"))
    export.add_header("Authorization", f"token {ADMIN_TOKEN}")
    with urllib.request.urlopen(export, timeout=10) as response:
        assert response.headers["Content-Length"] == str(len(state))
        assert response.headers["Transfer-Encoding"] is None
        assert response.read() == state


def test_sigterm_finishes_in_flight_requests_then_exits(server: Server) -> None:
    body = json.dumps({"stackName": "dev"}).encode()
    slow = socket.create_connection(("127.0.0.1", server.port))
    # A request in flight: headers and half its body sent, the rest still to come.
    slow.sendall(
        b"POST /api/stacks/acme/web HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: token {ADMIN_TOKEN}\r\n".encode()
        + b"Content-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body[:5]
    )
    time.sleep(0.5)
    server.process.send_signal(signal.SIGTERM)
    time.sleep(1.0)
    with pytest.raises(OSError):  # no new connections while draining
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
    assert server.process.poll() is None  # still finishing the request in flight
    slow.sendall(body[5:])
    response = slow.recv(65536).decode()
    slow.close()
    assert response.startswith("HTTP/1.1 200"), response
    assert server.process.wait(timeout=20) == 0
    log = server.log.read_text()
    assert "Traceback" not in log, log


def test_a_cluster_setting_without_a_key_refuses_to_start(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "procella", "serve"],
        env={**os.environ, "PROCELLA_DATABASE_URL": "postgresql://nowhere/db"},
        capture_output=True,
        timeout=60,
        text=True,
    )
    assert result.returncode != 0
    assert "PROCELLA_ENCRYPTION_KEY" in result.stderr


def test_several_workers_share_the_embedded_store(tmp_path: Path) -> None:
    found = start_server(tmp_path, PROCELLA_WORKERS="2")
    try:
        for name in ("a", "b", "c", "d"):  # spread over both worker processes
            request = urllib.request.Request(
                found.url("/api/stacks/acme/web"),
                data=json.dumps({"stackName": name}).encode(),
                headers={"Authorization": f"token {ADMIN_TOKEN}"},
                method="POST",
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 200
        status, body = found.get("/api/user/stacks")
        assert status == 200 and len(json.loads(body)["stacks"]) == 4
        found.process.send_signal(signal.SIGTERM)
        assert found.process.wait(timeout=30) == 0
    finally:
        if found.process.poll() is None:
            os.killpg(found.process.pid, signal.SIGKILL)
            found.process.wait()
