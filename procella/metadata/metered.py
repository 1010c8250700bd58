"""Timing for the metadata stores: statement latency by name, and connection checkouts.

A statement is named after the query function that ran it (``updates.get``,
``checkpoints.save_step``): a bounded set, since it is a set of functions in our code,
and the name an operator finds in ``procella/metadata/queries``. The name comes from the
caller's frame rather than a decorator on each of the sixty query functions, so a new
query is timed under its own name without anyone remembering to.
"""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from types import FrameType
from typing import Any, TypeVar

from procella import metrics
from procella.metadata.base import Connection, Row

T = TypeVar("T")
_QUERIES = "procella.metadata.queries."


def statement_name(frame: FrameType | None) -> str:
    """``<module>.<function>`` of a query function; ``<module>.<function>`` of any other
    Procella caller (migrations, ping); ``other`` outside Procella."""
    if frame is None:
        return "other"
    module = str(frame.f_globals.get("__name__", ""))
    if not module.startswith("procella."):
        return "other"
    short = module.removeprefix(_QUERIES) if module.startswith(_QUERIES) else module
    return f"{short.rsplit('.', 1)[-1]}.{frame.f_code.co_name}"


class MeteredConnection:
    """A ``Connection`` that times each statement of the one it wraps."""

    def __init__(self, inner: Connection) -> None:
        self._inner = inner
        self.dialect = inner.dialect

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        with _timed(sys._getframe(1)):
            return await self._inner.execute(sql, params)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with _timed(sys._getframe(1)):
            await self._inner.executemany(sql, rows)

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        with _timed(sys._getframe(1)):
            return await self._inner.fetchone(sql, params)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        with _timed(sys._getframe(1)):
            return await self._inner.fetchall(sql, params)


@contextmanager
def _timed(caller: FrameType) -> Iterator[None]:
    name = statement_name(caller)
    start = time.perf_counter()
    try:
        yield
    finally:
        metrics.DB_QUERY.labels(name).observe(time.perf_counter() - start)


@contextmanager
def checkout_wait() -> Iterator[None]:
    """Around the wait for a connection: counts the waiter and times the wait."""
    metrics.DB_POOL_WAITING.inc()
    start = time.perf_counter()
    try:
        yield
    finally:
        metrics.DB_POOL_WAITING.dec()
        metrics.DB_CHECKOUT.observe(time.perf_counter() - start)


@asynccontextmanager
async def checkout(acquire: AbstractAsyncContextManager[T]) -> AsyncIterator[T]:
    """Enter a pool's connection context (``pool.connection()``), timing only the wait."""
    waiting = checkout_wait()
    waiting.__enter__()
    done = False
    try:
        async with acquire as conn:
            waiting.__exit__(None, None, None)
            done = True
            yield conn
    finally:
        if not done:
            waiting.__exit__(None, None, None)


def pool_state(size: int, idle: int, max_size: int) -> None:
    metrics.DB_POOL_SIZE.set(size)
    metrics.DB_POOL_IDLE.set(idle)
    metrics.DB_POOL_MAX.set(max_size)
