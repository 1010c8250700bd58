"""Giving memory back to the system after large requests (glibc's allocator only).

A whole checkpoint of a large stack is tens of MB of bytes, allocated a few times per
step, in the event loop's thread and in worker threads. glibc serves blocks that large
with mmap at first, but each one freed raises its threshold for mmap (up to 32 MB), so
later ones come from the heap arenas (one per thread, up to eight per core), and a block
freed inside an arena stays in the process: RSS grows with large updates and does not
come down. ``configure`` keeps the arenas few; ``trim`` hands back what they hold free,
at most once a second (a fixed mmap threshold would return every large block at once, but
costs a page fault per page of every one: measured, +70% of server CPU on whole
checkpoints). ``procella serve`` calls ``configure`` (the process is its own) and runs
``trim_after_requests``: within a second of any request ending, and so once a request is
done and its answer sent, whatever it read, built or answered (an export, a journal's
base, a batch of ciphertexts) goes back, and a long-lived server does not keep the high
water mark of every large request before it. A request that read a large body also calls
``trim`` when it is done. Elsewhere (musl, macOS) all of them do nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import threading
import time
from functools import cache

log = logging.getLogger(__name__)

# mallopt parameter (glibc malloc.h).
_M_ARENA_MAX = -8

ARENA_MAX = 2
# A request body at least this large (inflated) trims when the request is done.
LARGE_BYTES = 1 << 20
# ``trim`` runs at most this often, whatever the number of large requests.
TRIM_INTERVAL = 1.0


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError, TypeError):
        return None  # not glibc
    return libc


def configure() -> bool:
    """Few arenas. True if the allocator took the setting."""
    libc = _libc()
    if libc is None:
        return False
    ok = bool(libc.mallopt(_M_ARENA_MAX, ARENA_MAX))
    if not ok:
        log.warning("the C allocator refused its settings; memory may not be returned")
    return ok


_lock = threading.Lock()
_last_trim = 0.0
_request_ended = threading.Event()


def trim(*, force: bool = False) -> None:
    """Return the free memory of every arena to the system (rate-limited unless ``force``:
    a long computation that frees as it goes)."""
    global _last_trim
    libc = _libc()
    if libc is None:
        return
    with _lock:
        now = time.monotonic()
        if not force and now - _last_trim < TRIM_INTERVAL:
            return
        _last_trim = now
    libc.malloc_trim(0)


def request_ended() -> None:
    """A request is done (its answer sent): ``trim_after_requests`` trims within a second."""
    _request_ended.set()


async def trim_after_requests() -> None:
    """Until cancelled: every ``TRIM_INTERVAL`` seconds, trim if a request ended since the
    last look. An idle server does nothing; a busy one trims once per interval, in a thread
    (``malloc_trim`` walks the arenas, a few ms for hundreds of MB)."""
    while True:
        await asyncio.sleep(TRIM_INTERVAL)
        if _request_ended.is_set():
            _request_ended.clear()
            await asyncio.to_thread(trim, force=True)
