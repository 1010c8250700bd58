"""deployments/compose brought up for real: `docker compose --profile dev|cluster up` with the
project's image (``procella:local``, built from deployments/Dockerfile) and local stand-ins
for the third-party images (compose.standins.yaml swaps only their ``image:`` lines), then a
real `pulumi up` through it, then `docker compose down -v`.

The bundle runs from a copy of the files it reads (compose folder, observability, Caddyfile)
so gen-secrets.sh writes its secrets there and not into the checkout. Compose gives the
project its own network; only the bundle's published ports appear on the host, on 127.0.0.1.
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from procella_testing import images, pulumi_toolchain
from procella_testing.pulumi_cli import PulumiCLI, Stack, make_project
from tests.deployments import tools

REPO = Path(__file__).resolve().parents[2]

OVERRIDE = Path(__file__).resolve().parent / "compose.standins.yaml"
# What each profile publishes on 127.0.0.1 (compose.yaml), and where the CLI logs in.
PUBLISHED = {"dev": (9090,), "cluster": (8080, 9091)}
BACKEND = {"dev": "http://127.0.0.1:9090", "cluster": "http://127.0.0.1:8080"}
ONE_SHOT = {"migrate", "bucket"}
UP_TIMEOUT = 300


@dataclass
class Bundle:
    folder: Path  # the copy's deployments/compose
    project: str
    profile: str

    def compose(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                str(tools.docker_compose()),
                "-p",
                self.project,
                "-f",
                "compose.yaml",
                "-f",
                "standins.yaml",
                "--profile",
                self.profile,
                *args,
            ],
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def diagnostics(self) -> str:
        ps = self.compose("ps", "-a")
        logs = self.compose("logs", "--no-color", "--tail", "60")
        return f"{ps.stdout}{ps.stderr}\n{logs.stdout[-12000:]}{logs.stderr[-2000:]}"


def _copy_bundle(root: Path) -> Path:
    """The files compose.yaml reads, at the same relative places."""
    shutil.copy(REPO / "Caddyfile", root / "Caddyfile")
    shutil.copytree(REPO / "deployments" / "compose", root / "deployments" / "compose")
    shutil.copytree(REPO / "deployments" / "observability", root / "deployments" / "observability")
    folder = root / "deployments" / "compose"
    shutil.rmtree(folder / "secrets", ignore_errors=True)  # a developer's, if any: not ours
    shutil.copy(OVERRIDE, folder / "standins.yaml")
    return folder


def _port_taken(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def standins(image: str) -> None:
    with images.build_lock():
        for name in ("postgres", "s3", "caddy", "prometheus"):
            images.ensure_standin(name)


@pytest.fixture(params=["dev", "cluster"])
def bundle(request: pytest.FixtureRequest, standins: None, tmp_path: Path) -> Iterator[Bundle]:
    profile = str(request.param)
    taken = [port for port in PUBLISHED[profile] if _port_taken(port)]
    if taken:
        pytest.fail(f"the {profile} profile publishes 127.0.0.1:{taken}, already in use")
    folder = _copy_bundle(tmp_path)
    generated = subprocess.run(
        ["sh", "gen-secrets.sh"], cwd=folder, capture_output=True, text=True, check=False
    )
    assert generated.returncode == 0, generated.stderr
    bundle = Bundle(folder, f"procella-test-{secrets.token_hex(4)}", profile)
    try:
        yield bundle
    finally:
        started = time.monotonic()
        down = bundle.compose("down", "-v", "--remove-orphans", "--timeout", "50", timeout=180)
        print(f"{profile}: down -v took {time.monotonic() - started:.0f} s")
        assert down.returncode == 0, down.stderr
        label = f"label=com.docker.compose.project={bundle.project}"
        left = subprocess.run(
            ["docker", "ps", "-aq", "--filter", label],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        volumes = subprocess.run(
            ["docker", "volume", "ls", "-q", "--filter", f"name={bundle.project}_"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert not left.strip() and not volumes.strip(), (left, volumes)


def _services(bundle: Bundle) -> dict[str, dict[str, object]]:
    out = bundle.compose("ps", "-a", "--format", "json").stdout
    # Compose prints one JSON object per line (older versions: one JSON array).
    rows = (
        json.loads(out)
        if out.lstrip().startswith("[")
        else [json.loads(line) for line in out.splitlines() if line.strip()]
    )
    return {str(row["Service"]): row for row in rows}


def test_bundle_up_then_pulumi_up(bundle: Bundle, tmp_path: Path) -> None:
    started = time.monotonic()
    up = bundle.compose("up", "-d", "--wait", "--no-build", timeout=UP_TIMEOUT)
    took = time.monotonic() - started
    assert up.returncode == 0, f"{up.stdout}\n{up.stderr}\n{bundle.diagnostics()}"
    print(f"\n{bundle.profile}: up --wait took {took:.0f} s")

    services = _services(bundle)
    expected = {"postgres", "minio", "bucket", "migrate"} | (
        {"procella"}
        if bundle.profile == "dev"
        else {"procella-1", "procella-2", "procella-3", "caddy", "prometheus"}
    )
    assert set(services) == expected, bundle.diagnostics()
    for name, row in services.items():
        if name in ONE_SHOT:
            assert row["State"] == "exited" and row["ExitCode"] == 0, (name, row)
        else:
            assert row["State"] == "running", (name, row, bundle.diagnostics())
            # Every long-running service of the bundle has a health check; all pass.
            assert row["Health"] == "healthy", (name, row, bundle.diagnostics())

    token = (bundle.folder / "secrets" / "admin_token").read_text().strip()
    toolchain = pulumi_toolchain.ensure_toolchain(pulumi_toolchain.DEFAULT_CLI_VERSION)
    cli = PulumiCLI(
        toolchain,
        tmp_path / "pulumi-home",
        backend_url=BACKEND[bundle.profile],
        token=token,
        cwd=tmp_path,
    )
    started = time.monotonic()
    try:
        cli.login()
        project = make_project("things", f"compose-{bundle.profile}", tmp_path)
        stack = Stack(cli, f"organization/compose-{bundle.profile}/dev", project).init()
        stack.ok("config", "set", "--secret", "secret", "s3cr3t")
        assert stack.up() == {"create": 8}, bundle.diagnostics()
        assert stack.up() == {"same": 8}
        shown = stack.ok("config", "get", "secret").stdout.strip()
        assert shown == "s3cr3t"  # the replicas share the encryption key secret file
        print(f"{bundle.profile}: pulumi login, init, up twice: {time.monotonic() - started:.0f} s")
    finally:
        cli.close()
