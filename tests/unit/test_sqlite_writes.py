"""What the embedded store writes to disk: deleting rows does not write their bytes again,
and statements do not journal into temporary files. Both were measured in the
benchmark's 10-resource change of a 1000-resource stack (e2e/README.md)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from procella.metadata.sqlite import SqliteStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    meta = SqliteStore(tmp_path / "meta.db")
    await meta.open()
    await meta.migrate()
    try:
        yield meta
    finally:
        await meta.close()


async def test_deleting_large_rows_does_not_write_them_again(
    store: SqliteStore, tmp_path: Path
) -> None:
    # Debian's SQLite is built to overwrite deleted content with zeros; 2 MB of states
    # pruned by the GC would be written again, to the WAL and later the file.
    states = [(f"{i:064x}", "x" * 200_000) for i in range(10)]
    async with store.transaction() as conn:
        await conn.executemany("INSERT INTO event_states (digest, body) VALUES (?, ?)", states)
    with contextlib.closing(sqlite3.connect(tmp_path / "meta.db")) as other:
        other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    wal = tmp_path / "meta.db-wal"
    assert wal.stat().st_size == 0
    async with store.transaction() as conn:
        assert await conn.execute("DELETE FROM event_states") == len(states)
    assert 0 < wal.stat().st_size < 100_000


async def test_statement_journals_stay_in_memory(store: SqliteStore) -> None:
    async with store.transaction() as conn:
        row = await conn.fetchone("PRAGMA temp_store")
    assert row is not None and row[0] == 2  # MEMORY
