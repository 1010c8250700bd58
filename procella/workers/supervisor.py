"""Background work of a replica: owns the tasks, restarts them with backoff, stops them.

Every replica runs the garbage collector's loop; each tick tries to become the one
holder of the "gc" lock in the deployment (``MetadataStore.exclusive``), so one replica
collects at a time and a dead holder's turn passes to the next replica that tries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from procella import metrics
from procella.blobs.base import BlobStore
from procella.metadata.base import MetadataStore
from procella.settings import Settings
from procella.workers.gc import GcReport, run_gc_once

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
        try:
            async with self.meta.exclusive("gc") as holder:
                if not holder:
                    metrics.GC_CYCLES.labels("skipped").inc()
                    return False
                await self._gc_cycle()
                return True
        except Exception:
            metrics.GC_CYCLES.labels("failed").inc()
            raise

    async def _gc_cycle(self) -> None:
        """One cycle, under the lock: timed, counted, summed up in the log."""
        metrics.GC_LOCK_HELD.set(1)
        started = time.perf_counter()
        try:
            report = await run_gc_once(self.meta, self.blobs, self.settings)
        finally:
            metrics.GC_LOCK_HELD.set(0)
        seconds = time.perf_counter() - started
        metrics.GC_CYCLES.labels("ran").inc()
        metrics.GC_DURATION.observe(seconds)
        metrics.GC_LAST_CYCLE.set(time.time())
        # A cycle a minute: at INFO only when it collected something, so idle is quiet.
        level = logging.INFO if report != GcReport() else logging.DEBUG
        log.log(level, "gc cycle in %.2f s: %s", seconds, report)

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
