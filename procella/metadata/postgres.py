"""PostgreSQL metadata store: shared by every replica of a cluster.

Transactions run at READ COMMITTED with explicit row locks (``SELECT ... FOR UPDATE``)
wherever a rule depends on a row, so concurrent replicas serialize on the rows they share
and on nothing else. Driver errors are translated here: a unique violation becomes
``UniqueViolation``; serialization failures, deadlocks, lost connections and pool
timeouts become ``TransientStoreError`` (a 503 the CLI retries). Since each request is
one transaction (or several independent ones), a retry never finds half-applied state.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from procella.errors import BadRequest, ConfigurationError, NotFound, TransientStoreError
from procella.metadata import metered, migrations
from procella.metadata.base import GONE, Connection, Row, UniqueViolation
from procella.settings import Settings

log = logging.getLogger(__name__)

_NOW_MS = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::bigint"
_PLACEHOLDER = re.compile(r"\?")

# Advisory lock keys. "gc" keeps the historic key of the TypeScript Procella
# (0x5472617461_4743, "TrataGC") so that mixed deployments never collect twice.
# PostgreSQL 15 has no hex literals, so keys are always passed as bound integers.
LOCK_KEYS = {"gc": 0x5472617461_4743, "migrate": 0x5472617461_4D49}


def lock_key(name: str) -> int:
    """The advisory-lock key of ``name``: a fixed one, or a stable hash of the name."""
    if name in LOCK_KEYS:
        return LOCK_KEYS[name]
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@lru_cache(maxsize=512)
def _translate(sql: str) -> str:
    return _PLACEHOLDER.sub("%s", sql.replace("%", "%%")).replace("NOW_MS", _NOW_MS)


# Transient failures and the cause each is counted under (a 503 the CLI retries). Most
# specific first: several are subclasses of OperationalError.
_TRANSIENT: tuple[tuple[type[Exception], str], ...] = (
    (pg_errors.SerializationFailure, "serialization_failure"),
    (pg_errors.DeadlockDetected, "deadlock"),
    (pg_errors.LockNotAvailable, "lock_not_available"),
    (pg_errors.QueryCanceled, "statement_timeout"),
    (pg_errors.AdminShutdown, "admin_shutdown"),
    (pg_errors.CannotConnectNow, "cannot_connect_now"),
    (PoolTimeout, "pool_timeout"),
    (psycopg.OperationalError, "connection"),
)


def _map_error(exc: Exception) -> Exception:
    if isinstance(exc, pg_errors.UniqueViolation):
        return UniqueViolation(exc.diag.constraint_name or "")
    if isinstance(exc, pg_errors.ForeignKeyViolation):
        return NotFound(GONE)
    if isinstance(exc, psycopg.DataError):  # e.g. a NUL character, which text cannot hold
        return BadRequest(f"the request holds a value the database cannot store: {exc}")
    for kind, cause in _TRANSIENT:
        if isinstance(exc, kind):
            return TransientStoreError(
                f"database unavailable, retry: {type(exc).__name__}", cause=cause
            )
    return exc


async def _prefer_lz4(conn: psycopg.AsyncConnection[Any]) -> None:
    """Store checkpoint texts and journal entries with lz4 rather than the default pglz where
    the server has it.

    Checkpoint JSON compresses well, and with pglz compressing it was most of the cost of
    a checkpoint write under load (loadtest/README.md: 4.1 ms vs 1.3 ms for 419 KiB). Not a
    migration, because servers built without lz4 refuse the clause: they keep pglz.
    """
    for table, column in (("checkpoints", "data"), ("journal_entries", "body")):
        cursor = await conn.execute(
            "SELECT attcompression FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attname = %s",
            (table, column),
        )
        row = await cursor.fetchone()
        if row is None or row[0] == "l":
            continue
        try:
            async with conn.transaction():
                await conn.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET COMPRESSION lz4")
        except psycopg.errors.FeatureNotSupported:
            log.info("this PostgreSQL has no lz4: %s.%s stays compressed with pglz", table, column)
            return


class PostgresConnection:
    """The ``Connection`` of one transaction on a pooled psycopg connection."""

    dialect = "postgres"

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        try:
            cursor = await self._conn.execute(_translate(sql), params)
        except (psycopg.Error, PoolTimeout) as exc:
            raise _map_error(exc) from exc
        return cursor.rowcount

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        try:
            async with self._conn.cursor() as cursor:
                await cursor.executemany(_translate(sql), rows)
        except (psycopg.Error, PoolTimeout) as exc:
            raise _map_error(exc) from exc

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        try:
            cursor = await self._conn.execute(_translate(sql), params)
            row = await cursor.fetchone()
        except (psycopg.Error, PoolTimeout) as exc:
            raise _map_error(exc) from exc
        return None if row is None else tuple(row)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        try:
            cursor = await self._conn.execute(_translate(sql), params)
            rows = await cursor.fetchall()
        except (psycopg.Error, PoolTimeout) as exc:
            raise _map_error(exc) from exc
        return [tuple(r) for r in rows]


class PostgresStore:
    """``MetadataStore`` on PostgreSQL through a psycopg connection pool."""

    dialect = "postgres"

    def __init__(self, url: str, settings: Settings) -> None:
        self.url = url
        self.settings = settings
        self._pool: AsyncConnectionPool | None = None
        self._recheck: asyncio.Future[None] | None = None

    def _connect_kwargs(self) -> dict[str, Any]:
        timeout_ms = int(self.settings.database_statement_timeout * 1000)
        return {
            "autocommit": True,
            "connect_timeout": max(1, int(self.settings.database_connect_timeout)),
            "options": f"-c statement_timeout={timeout_ms}",
            "application_name": "procella",
        }

    async def open(self) -> None:
        pool = AsyncConnectionPool(
            self.url,
            min_size=self.settings.database_pool_min_size,
            max_size=self.settings.database_pool_max_size,
            timeout=self.settings.database_connect_timeout,
            kwargs=self._connect_kwargs(),
            open=False,
            name="procella",
        )
        try:
            await pool.open(wait=True, timeout=self.settings.database_connect_timeout)
        except (PoolTimeout, psycopg.Error) as exc:
            await pool.close()
            raise ConfigurationError(f"cannot connect to PostgreSQL: {exc}") from exc
        self._pool = pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def ping(self) -> None:
        async with self.read() as conn:
            await conn.fetchone("SELECT 1")

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        pool = self._pool
        assert pool is not None, "store is not open"
        try:
            async with metered.checkout(pool.connection()) as conn:
                stats = pool.get_stats()
                metered.pool_state(stats["pool_size"], stats["pool_available"], stats["pool_max"])
                yield conn
        except Exception as exc:
            cause = exc.__cause__ if isinstance(exc, TransientStoreError) else exc
            if isinstance(cause, psycopg.OperationalError) and self._recheck is None:
                # A lost connection usually means the server restarted, and then every idle
                # connection is dead too. Check them all now, so the CLI's retry gets a live
                # one (the pool drops a broken connection when it comes back, only that one).
                self._recheck = asyncio.ensure_future(self._check_pool(pool))
            if isinstance(exc, (psycopg.Error, PoolTimeout)):
                raise _map_error(exc) from exc
            raise

    async def _check_pool(self, pool: AsyncConnectionPool) -> None:
        try:
            await pool.check()
        finally:
            self._recheck = None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self._connection() as conn:
            try:
                async with conn.transaction():
                    yield metered.MeteredConnection(PostgresConnection(conn))
            except (psycopg.Error, PoolTimeout) as exc:  # e.g. the COMMIT itself failed
                raise _map_error(exc) from exc

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Connection]:
        # No BEGIN/COMMIT: at READ COMMITTED every statement takes its own snapshot even
        # inside a transaction, so autocommit reads see exactly the same, in fewer trips.
        async with self._connection() as conn:
            yield metered.MeteredConnection(PostgresConnection(conn))

    @asynccontextmanager
    async def single_write(self) -> AsyncIterator[Connection]:
        async with self._connection() as conn:
            yield metered.MeteredConnection(PostgresConnection(conn))

    async def _dedicated(self) -> psycopg.AsyncConnection[Any]:
        """A connection outside the pool, for session-level advisory locks: the lock must
        be taken and released on the same session, and dies with it."""
        try:
            return await psycopg.AsyncConnection.connect(self.url, **self._connect_kwargs())
        except psycopg.Error as exc:
            raise _map_error(exc) from exc

    @asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[bool]:
        conn = await self._dedicated()
        try:
            cursor = await conn.execute("SELECT pg_try_advisory_lock(%s)", (lock_key(name),))
            row = await cursor.fetchone()
            held = bool(row and row[0])
            try:
                yield held
            finally:
                if held and not conn.closed:
                    # If the session is gone, so is the lock: nothing to undo.
                    with contextlib.suppress(psycopg.Error):
                        await conn.execute("SELECT pg_advisory_unlock(%s)", (lock_key(name),))
        finally:
            await conn.close()

    async def migrate(self) -> list[str]:
        """Apply pending migrations; replicas starting together wait for each other."""
        conn = await self._dedicated()
        applied: list[str] = []
        try:
            await conn.execute("SELECT pg_advisory_lock(%s)", (lock_key("migrate"),))
            await conn.execute(migrations.CREATE_TABLE)
            cursor = await conn.execute("SELECT name FROM schema_migrations")
            done = {row[0] for row in await cursor.fetchall()}
            for name, statements in migrations.load(self.dialect):
                if name in done:
                    continue
                async with conn.transaction():
                    for statement in statements:
                        await conn.execute(statement.encode())
                    await conn.execute(
                        _translate(
                            "INSERT INTO schema_migrations (name, applied_at) VALUES (?, NOW_MS)"
                        ),
                        (name,),
                    )
                applied.append(name)
                log.info("applied migration %s", name)
            await _prefer_lz4(conn)
        except psycopg.Error as exc:
            raise _map_error(exc) from exc
        finally:
            await conn.close()
        return applied
