"""The image users build from deployments/Dockerfile, built and started for real: it runs
as uid 10001, its CLI works, its HEALTHCHECK passes on the embedded default, the data folder
is the user's, it has no compiler, keeps nothing of the build's registry settings, and its
size stays within a budget (and is reported)."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator

import pytest

from procella_testing import images

from .conftest import docker, expect_ok, run_in

# python:3.11-slim-bookworm is ~130 MB and the venv ~100 MB; the local Debian base is a little
# bigger (~170 MB). Growth past this is worth a look before it ships.
SIZE_BUDGET_MB = 350


def test_runs_as_uid_10001(image: str) -> None:
    assert images.inspect(image)["Config"]["User"] == "10001:10001"  # type: ignore[index]
    assert run_in(image, ["-c", "id -u; id -g"], entrypoint="sh").split() == ["10001", "10001"]


def test_cli_answers(image: str) -> None:
    out = run_in(image, ["--help"])
    for command in ("serve", "migrate", "token", "gc"):
        assert command in out, out


def test_data_folder_is_writable_by_the_user(image: str) -> None:
    out = run_in(
        image,
        ["-c", "touch /var/lib/procella/probe && stat -c '%u %a' /var/lib/procella"],
        entrypoint="sh",
    )
    assert out.split() == ["10001", "750"], out


def test_no_compiler(image: str) -> None:
    # Exits 1 and names what it found: a compiler driver, a linker or GCC's files.
    found_any = (
        "for c in cc gcc g++ clang make ld; do command -v $c && exit 1; done; "
        "ls -d /usr/bin/*gcc* /usr/lib/gcc 2>/dev/null && exit 1; exit 0"
    )
    run_in(image, ["-c", found_any], entrypoint="sh")


def test_no_build_settings_are_kept(image: str) -> None:
    # PIP_INDEX_URL and PIP_CERT are build arguments of the build stage, the CA bundle a
    # secret: none may reach the final image's history, environment or files.
    history = expect_ok(docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", image))
    config = json.dumps(images.inspect(image)["Config"])
    for needle in ("PIP_INDEX_URL", "PIP_CERT", "pip-ca"):
        assert needle not in history and needle not in config
    assert run_in(image, ["-c", "ls /run/secrets 2>&1 || true"], entrypoint="sh").strip() in (
        "",
        "ls: cannot access '/run/secrets': No such file or directory",
    )


@pytest.fixture
def serving(image: str) -> Iterator[str]:
    """`procella serve` on the embedded default, as `docker run procella:local` starts it.
    No network but its own loopback: the image's HEALTHCHECK asks 127.0.0.1:9090 in there."""
    name = f"procella-image-test-{secrets.token_hex(4)}"
    expect_ok(docker("run", "-d", "--name", name, "--network", "none", image))
    try:
        yield name
    finally:
        docker("rm", "-f", "-v", name)


def test_healthcheck_passes_on_the_embedded_default(serving: str) -> None:
    # The image's own HEALTHCHECK (first run after its 10 s interval).
    deadline = time.monotonic() + 60
    status = ""
    while time.monotonic() < deadline:
        state = json.loads(expect_ok(docker("inspect", "--format", "{{json .State}}", serving)))
        status = state.get("Health", {}).get("Status", "")
        assert state["Running"], expect_ok(docker("logs", serving))
        if status == "healthy":
            break
        time.sleep(1)
    assert status == "healthy", expect_ok(docker("logs", serving))
    # The server made its SQLite database and key in the data folder, as uid 10001.
    files = expect_ok(docker("exec", serving, "ls", "/var/lib/procella")).split()
    assert "procella.db" in files, files


def test_size_is_within_budget(image: str, record_property: Callable[[str, object], None]) -> None:
    size = images.image_size_mb(image)
    record_property("image_size_mb", round(size, 1))
    print(f"\n{image}: {size:.1f} MB")  # shown with -s / -rP; nox prints it when it builds
    assert size < SIZE_BUDGET_MB
