"""Background work of a replica: owns the tasks, restarts them with backoff, stops them.

Every replica runs the garbage collector's loop; each tick tries to become the one
holder of the "gc" lock in the deployment (``MetadataStore.exclusive``), so one replica
collects at a time and a dead holder's turn passes to the next replica that tries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from procella.blobs.base import BlobStore
from procella.metadata.base import MetadataStore
from procella.settings import Settings
from procella.workers.gc import run_gc_once

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 300.0


class Supervisor:
    def __init__(self, meta: MetadataStore, blobs: BlobStore, settings: Settings) -> None:
        self.meta = meta
        self.blobs = blobs
        self.settings = settings
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks.append(
            asyncio.create_task(
                self._every(self.settings.gc_interval_seconds, self.gc_tick), name="gc"
            )
        )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def gc_tick(self) -> bool:
        """One attempt: run a cycle if this replica gets the lock. Returns whether it ran."""
        async with self.meta.exclusive("gc") as holder:
            if not holder:
                return False
            await run_gc_once(self.meta, self.blobs, self.settings)
            return True

    @staticmethod
    async def _every(interval: float, tick: Callable[[], Awaitable[object]]) -> None:
        failures = 0
        while True:
            try:
                await tick()
                failures = 0
                delay = interval
            except Exception:
                failures += 1
                delay = min(interval * 2**failures, MAX_BACKOFF_SECONDS)
                log.exception("background task failed; retrying in %.0f s", delay)
            await asyncio.sleep(delay)
