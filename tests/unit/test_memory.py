"""procella.memory: the C allocator's settings for a long-lived server.

Procella runs on glibc (Debian: CI, the image); these tests say so rather than skip.
"""

from __future__ import annotations

import asyncio
import platform
import subprocess
import sys

import pytest

from procella import create_app, memory, serving
from procella.settings import Settings

# A large block freed raises glibc's mmap threshold; the next large blocks then come from
# the heap, and one freed below a small block that lives on stays in the process.
FRAGMENTING = """
import sys
from procella import memory

assert memory.configure()
keep = []
x = bytes(20 << 20)
del x
for _ in range(4):
    block = bytes(16 << 20)
    keep.append(bytearray(1000))
    del block
if sys.argv[1] == "trim":
    memory.trim()
for line in open("/proc/self/status"):
    if line.startswith("VmRSS:"):
        print(int(line.split()[1]) // 1024)
"""


def rss_after(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", FRAGMENTING, mode], capture_output=True, text=True, check=True
    )
    return int(out.stdout)


def test_trim_gives_freed_large_blocks_back_to_the_system() -> None:
    assert platform.libc_ver()[0] == "glibc", "procella.memory acts on glibc only"
    assert rss_after("trim") <= rss_after("keep") - 8


def test_trim_never_fails() -> None:
    memory.trim()
    memory.trim()  # rate-limited: a no-op


async def test_procella_serve_trims_after_a_request_ends(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    trims: list[bool] = []
    memory._request_ended.clear()  # what an earlier test's server may have left
    monkeypatch.setattr(memory, "TRIM_INTERVAL", 0.01)
    monkeypatch.setattr(memory, "trim", lambda *, force=False: trims.append(force))
    app = serving._trimming_memory(create_app(settings))
    async with app.test_app() as running:
        await asyncio.sleep(0.1)
        assert trims == []  # idle: nothing to give back
        response = await running.test_client().get("/healthz")
        assert response.status_code == 200
        for _ in range(500):
            if trims:
                break
            await asyncio.sleep(0.01)
        assert trims == [True]
