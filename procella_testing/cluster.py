"""The cluster topology of the e2e suite and the load runs: three ``procella serve`` replicas on one
PostgreSQL database and one S3 bucket, behind Caddy with the repository's Caddyfile.

It is the compose "cluster" profile as local processes (no Docker engine here): the same
Caddyfile, the same settings, real PostgreSQL and a real S3 protocol server. ``Cluster``
offers what the tests use of ``ProcellaServer`` (url, admin token, tokens, raw API calls,
logs), and ``kill_replica`` for failure tests.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import urllib.request
from pathlib import Path
from typing import IO, Any

from procella_testing.procella_server import ProcellaServer, call_api
from procella_testing.processes import Result, free_port, kill_group, poll, stop_group

REPO = Path(__file__).resolve().parent.parent
REPLICAS = 3


class Cluster:
    def __init__(
        self, root: Path, *, database_url: str, s3_endpoint: str, bucket: str, mode: str
    ) -> None:
        self.root = root
        self.mode = mode
        self.delta = mode == "delta"
        self.admin_token = "pul-" + secrets.token_hex(20)
        shared = {
            "PROCELLA_DATABASE_URL": database_url,
            "PROCELLA_BLOB_BACKEND": "s3",
            "PROCELLA_BLOB_S3_ENDPOINT": s3_endpoint,
            "PROCELLA_BLOB_S3_BUCKET": bucket,
            "PROCELLA_ENCRYPTION_KEY": secrets.token_hex(32),
            "PROCELLA_ADMIN_TOKEN": self.admin_token,
            # Small: checkpoints of the test programs go to S3, so replicas share blobs too.
            "PROCELLA_CHECKPOINT_INLINE_MAX_BYTES": "4096",
            "AWS_ACCESS_KEY_ID": "procella-e2e",
            "AWS_SECRET_ACCESS_KEY": "procella-e2e",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        self.replicas = [
            ProcellaServer(root / f"replica{i}", mode=mode, cutoff_bytes=0, extra_env=shared)
            for i in range(REPLICAS)
        ]
        for replica in self.replicas:
            replica.admin_token = self.admin_token
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.caddy_log_path = root / "caddy.log"
        self._caddy: subprocess.Popen[bytes] | None = None
        self._caddy_log: IO[bytes] | None = None
        self._log_marks: list[list[int]] = []

    # Lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        for replica in self.replicas:
            replica.start()
        self._start_caddy()

    def _start_caddy(self) -> None:
        caddy = shutil.which("caddy")
        if caddy is None:
            raise RuntimeError("caddy is not installed (Debian: apt-get install -y caddy)")
        xdg = self.root / "caddy-home"
        xdg.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "XDG_CONFIG_HOME": str(xdg),
            "XDG_DATA_HOME": str(xdg),
            "CADDY_BIND": "127.0.0.1",
            "CADDY_PORT": str(self.port),
            "CADDY_ADMIN": f"127.0.0.1:{free_port()}",
            "CADDY_UPSTREAMS": " ".join(f"127.0.0.1:{r.port}" for r in self.replicas),
        }
        self._caddy_log = open(self.caddy_log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._caddy = subprocess.Popen(
            [caddy, "run", "--config", str(REPO / "Caddyfile"), "--adapter", "caddyfile"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._caddy_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        poll(self._proxy_healthy, timeout=60, message=f"{self.url}/healthz through caddy")

    def _proxy_healthy(self) -> bool:
        assert self._caddy is not None
        if self._caddy.poll() is not None:
            raise RuntimeError(f"caddy exited:\n{self.caddy_log_path.read_text()}")
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self._caddy is not None:
            stop_group(self._caddy)
            self._caddy = None
        if self._caddy_log is not None:
            self._caddy_log.close()
            self._caddy_log = None
        for replica in self.replicas:
            replica.stop()

    def lease_requests(self) -> list[int]:
        """Requests each replica has answered that carry an update's lease token (those
        under ``.../<kind>/<update_id>/``), from its /metrics; -1 for a replica not running.
        The Caddyfile sends an update's requests to one replica: the one whose count grows."""
        counts = []
        live = self.live_replicas()
        for replica in self.replicas:
            if replica not in live:
                counts.append(-1)
                continue
            with urllib.request.urlopen(replica.url + "/metrics", timeout=10) as response:
                text = response.read().decode()
            counts.append(
                sum(
                    int(float(line.rsplit(" ", 1)[1]))
                    for line in text.splitlines()
                    if line.startswith("procella_http_requests_total{") and "<update_id>/" in line
                )
            )
        return counts

    def kill_replica(self, index: int) -> None:
        """SIGKILL one replica, as a crash or an OOM kill would: no draining."""
        process = self.replicas[index].process
        assert process is not None
        kill_group(process, signal.SIGKILL)
        process.wait()

    def live_replicas(self) -> list[ProcellaServer]:
        """The replicas still running (a test may have killed one)."""
        return [r for r in self.replicas if r.process is not None and r.process.poll() is None]

    # What the tests use of a server -------------------------------------------------------

    def create_token(self, org: str, role: str, user: str | None = None) -> str:
        return self.replicas[0].create_token(org, role, user)

    def admin_command(self, *args: str) -> Result:
        return self.replicas[0].admin_command(*args)

    def api(
        self, method: str, path: str, *, token: str | None = None, body: Any = None
    ) -> tuple[int, Any]:
        """A call through the load balancer."""
        return call_api(self.url, method, path, token or self.admin_token, body)

    def log_size(self) -> int:
        """A mark for ``log_tail``: where every replica's log stands now."""
        self._log_marks.append([r.log_size() for r in self.replicas])
        return len(self._log_marks) - 1

    def log_tail(self, since: int = 0, max_bytes: int = 20000) -> str:
        marks = self._log_marks[since] if since < len(self._log_marks) else [0] * REPLICAS
        return "\n".join(
            f"--- replica {i} ---\n{r.log_tail(mark, max_bytes // REPLICAS)}"
            for i, (r, mark) in enumerate(zip(self.replicas, marks, strict=True))
        )
