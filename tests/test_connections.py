"""Keep-alive connections after answers given before the request body was read.

A refused lease (403), a wrong method (405) or a declared length over the limit (413) is
answered without reading the body. If the server then closes the connection without
saying so, a client that reuses it (Go's, the CLI's) meets a reset on its next request.
These tests speak raw HTTP/1.1 to a real ``procella serve``: the body's tail arrives after
the server could have answered, and the next request goes on the same connection.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from procella.api.drain import DRAIN_MAX_BYTES
from tests.conftest import ADMIN_TOKEN
from tests.test_serve import Server, start_server

# Each test starts `procella serve` processes: seconds apiece.
pytestmark = pytest.mark.slow

MAX_REQUEST_BYTES = 512 * 1024
STACK = "/api/stacks/acme/web/dev"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp_path: Path = tmp_path_factory.mktemp("serve")
    found = start_server(tmp_path, PROCELLA_MAX_REQUEST_BYTES=str(MAX_REQUEST_BYTES))
    try:
        yield found
    finally:
        if found.process.poll() is None:
            os.killpg(found.process.pid, signal.SIGKILL)
            found.process.wait()


@pytest.fixture(scope="module")
def update_path(server: Server) -> str:
    """An update of a new stack, created but not started: no update token is its lease."""
    post(server, "/api/stacks/acme/web", {"stackName": "dev"})
    created = post(server, f"{STACK}/update", {})
    return f"{STACK}/update/{created['updateID']}"


def post(server: Server, path: str, body: object) -> dict[str, str]:
    request = urllib.request.Request(
        server.url(path),
        data=json.dumps(body).encode(),
        headers={"Authorization": f"token {ADMIN_TOKEN}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        found: dict[str, str] = json.loads(response.read())
        return found


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


def read_response(sock: socket.socket) -> Response:
    """One HTTP/1.1 response with a Content-Length, read byte-exactly off ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed mid-response: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, value = line.split(":", 1)
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        body += chunk
    assert len(body) == length, "more bytes than the response's own"
    return Response(int(status_line.split()[1]), headers, body)


def send_late_body(sock: socket.socket, head: bytes, body: bytes) -> threading.Thread:
    """Send the head and 1 KiB of body now, the rest half a second later (by then the
    server could have answered); a server that hung up makes the rest fail, silently."""

    def send() -> None:
        try:
            sock.sendall(head + body[:1024])
            time.sleep(0.5)
            sock.sendall(body[1024:])
        except OSError:
            pass

    sender = threading.Thread(target=send)
    sender.start()
    return sender


def early_requests(update_path: str) -> dict[str, tuple[str, str, str, int]]:
    """name: (method, path, authorization, status), each answered before the body is read."""
    return {
        "refused lease": ("PATCH", f"{update_path}/checkpoint", "update-token nope", 403),
        "wrong method": ("PUT", STACK, f"token {ADMIN_TOKEN}", 405),
        "unknown token": ("POST", "/api/stacks/acme/web", "token pul-unknown", 401),
    }


@pytest.mark.parametrize("name", ["refused lease", "wrong method", "unknown token", "too large"])
@pytest.mark.parametrize("size", [64 * 1024, DRAIN_MAX_BYTES + 512 * 1024])
def test_an_early_answer_leaves_the_connection_usable_or_says_close(
    server: Server, update_path: str, name: str, size: int
) -> None:
    if name == "too large":  # refused on its Content-Length alone
        method, path, auth, status = "POST", "/api/stacks/acme/web", f"token {ADMIN_TOKEN}", 413
        size += MAX_REQUEST_BYTES
    else:
        method, path, auth, status = early_requests(update_path)[name]
    body = b"x" * size
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: procella\r\nAuthorization: {auth}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=15) as sock:
        sender = send_late_body(sock, head, body)
        first = read_response(sock)
        sender.join()
        assert first.status == status, first.body
        assert json.loads(first.body)["code"] == status
        if size - 1024 > DRAIN_MAX_BYTES:
            # Too much body to wait for: the answer says the connection ends.
            assert first.headers.get("connection") == "close", first.headers
            return
        # A body the server can wait for: it reads it, and the connection lives on.
        assert "connection" not in first.headers, first.headers
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: procella\r\n\r\n")
        second = read_response(sock)
        assert second.status == 200, second.body
