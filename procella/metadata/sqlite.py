"""SQLite metadata store: the embedded default, for one machine.

One connection writes, under an asyncio lock, in ``BEGIN IMMEDIATE`` transactions (the
shape of datasette's write thread); a few more connections read, so long reads never wait
for writes (WAL mode). Several server processes may share the file: SQLite's own locking
and ``busy_timeout`` serialize their writers. ``exclusive()`` is a lock file.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import aiosqlite

from procella.errors import ConfigurationError, NotFound, TransientStoreError
from procella.metadata import metered, migrations
from procella.metadata.base import GONE, Connection, Row, UniqueViolation

log = logging.getLogger(__name__)

_NOW_MS = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"
_FOR_UPDATE = re.compile(r"\s+FOR (UPDATE|KEY SHARE)( OF \w+)?( SKIP LOCKED)?")
_READERS = 4
_BUSY_TIMEOUT_MS = 30_000


@lru_cache(maxsize=512)
def _translate(sql: str) -> str:
    return _FOR_UPDATE.sub("", sql).replace("NOW_MS", _NOW_MS)


def _map_error(exc: sqlite3.Error) -> Exception:
    if isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in str(exc):
        return UniqueViolation(str(exc))
    if isinstance(exc, sqlite3.IntegrityError) and "FOREIGN KEY" in str(exc):
        return NotFound(GONE)
    if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
        return TransientStoreError("the database is busy; retry", cause="database_busy")
    return exc


class SqliteConnection:
    """The ``Connection`` of one transaction on an aiosqlite connection."""

    dialect = "sqlite"

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        try:
            cursor = await self._db.execute(_translate(sql), params)
        except sqlite3.Error as exc:
            raise _map_error(exc) from exc
        return cursor.rowcount

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        try:
            await self._db.executemany(_translate(sql), rows)
        except sqlite3.Error as exc:
            raise _map_error(exc) from exc

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        # One trip to aiosqlite's thread runs, reads and finishes the statement: no cursor is
        # left half-read (an open read statement pins an old snapshot) even if we are
        # cancelled while it runs.
        try:
            rows = await self._db.execute_fetchall(_translate(sql), params)
        except sqlite3.Error as exc:
            raise _map_error(exc) from exc
        return [tuple(r) for r in rows]


async def _finish(db: aiosqlite.Connection, release: Callable[[], None]) -> None:
    """After a failed or cancelled transaction: roll back whatever is still open on ``db``,
    then ``release`` it; complete even when the calling task is cancelled.

    A client that hangs up cancels its request mid-statement, but the statement still runs
    on aiosqlite's thread: handing the connection back at once would leave a transaction
    open on it for the next user ("cannot start a transaction within a transaction").
    """

    async def reset() -> None:
        try:
            await db.execute("SELECT 1")  # queued behind any statement still running
            if db.in_transaction:
                await db.execute("ROLLBACK")
        except (sqlite3.Error, ValueError) as exc:  # ValueError: the connection is closed
            log.warning("could not reset a SQLite connection: %s", exc)
        finally:
            release()

    await asyncio.shield(asyncio.ensure_future(reset()))


class SqliteStore:
    """``MetadataStore`` on a SQLite file."""

    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._readers: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        self._all: list[aiosqlite.Connection] = []

    async def _connect(self) -> aiosqlite.Connection:
        db = await aiosqlite.connect(self.path, isolation_level=None)
        await db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        await db.execute("PRAGMA journal_mode = WAL")
        await db.execute("PRAGMA synchronous = NORMAL")
        await db.execute("PRAGMA foreign_keys = ON")
        # Debian's SQLite zeroes deleted content by default: pruning an update's journal
        # (tens of MB for a large stack) would write all of it again, to the WAL and then
        # the file. The data deleted is kept elsewhere anyway (the stored state).
        await db.execute("PRAGMA secure_delete = OFF")
        # A statement that inserts many rows into random places of an index (an events
        # batch's state references, when each update had its own) journals the pages it
        # changes; past 64 KiB that journal is a temporary file (12 MB for one update).
        await db.execute("PRAGMA temp_store = MEMORY")
        self._all.append(db)
        return db

    async def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = await self._connect()
            for _ in range(_READERS):
                self._readers.put_nowait(await self._connect())
            metered.pool_state(len(self._all), _READERS, len(self._all))
        except (OSError, sqlite3.Error) as exc:
            await self.close()
            raise ConfigurationError(f"cannot open SQLite database {self.path}: {exc}") from exc

    async def close(self) -> None:
        for db in self._all:
            await db.close()
        self._all.clear()
        self._writer = None
        self._readers = asyncio.Queue()

    async def ping(self) -> None:
        async with self.read() as conn:
            await conn.fetchone("SELECT 1")

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        db = self._writer
        assert db is not None, "store is not open"
        with metered.checkout_wait():
            await self._write_lock.acquire()
        try:
            try:
                await db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise _map_error(exc) from exc
            yield metered.MeteredConnection(SqliteConnection(db))
            await db.execute("COMMIT")
        except BaseException:
            await _finish(db, self._write_lock.release)
            raise
        self._write_lock.release()

    def single_write(self) -> AbstractAsyncContextManager[Connection]:
        return self.transaction()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Connection]:
        # Autocommit: each statement reads the latest committed state, as PostgreSQL's
        # READ COMMITTED does, and no transaction is left to clean up after a cancellation.
        assert self._writer is not None, "store is not open"
        with metered.checkout_wait():
            db = await self._readers.get()
        metered.pool_state(len(self._all), self._readers.qsize(), len(self._all))
        try:
            yield metered.MeteredConnection(SqliteConnection(db))
        finally:
            self._readers.put_nowait(db)

    @asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[bool]:
        lock_path = self.path.with_name(f"{self.path.name}.{name}.lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    async def migrate(self) -> list[str]:
        applied: list[str] = []
        async with self.transaction() as conn:
            await conn.execute(migrations.CREATE_TABLE)
            done = {r[0] for r in await conn.fetchall("SELECT name FROM schema_migrations")}
            for name, statements in migrations.load(self.dialect):
                if name in done:
                    continue
                for statement in statements:
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO schema_migrations (name, applied_at) VALUES (?, NOW_MS)", (name,)
                )
                applied.append(name)
                log.info("applied migration %s", name)
        return applied
