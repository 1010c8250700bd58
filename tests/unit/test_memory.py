"""procella.memory: the C allocator's settings for a long-lived server.

Procella runs on glibc (Debian: CI, the image); these tests say so rather than skip.
"""

from __future__ import annotations

import platform
import subprocess
import sys

from procella import memory

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
