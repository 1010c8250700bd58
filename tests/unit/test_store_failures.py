"""How the metadata stores fail: each driver's errors become the domain's, on SQLite and on
PostgreSQL alike, and a store that cannot open says why.

The contract suite (tests/contract) checks what the stores do; this checks what they
refuse, since the API's status codes depend on the translation (a unique violation is a
409, a row that vanished a 404, a value PostgreSQL cannot hold a 400, an unreachable
database a 503 or a refusal to start).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from procella.errors import BadRequest, ConfigurationError, NotFound, TransientStoreError
from procella.metadata.base import GONE, MetadataStore, UniqueViolation
from procella.metadata.postgres import PostgresStore
from procella.metadata.sqlite import SqliteStore
from procella.settings import Settings
from procella_testing.processes import free_port

ORG = "INSERT INTO orgs (id, name, created_at) VALUES (?, ?, NOW_MS)"


def _pg_settings(url: str) -> Settings:
    return Settings(
        database_url=url,
        encryption_key="00" * 32,
        database_pool_max_size=2,
        database_connect_timeout=2,
    )


@pytest.fixture(params=["sqlite", "postgres"])
async def meta(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MetadataStore]:
    store: MetadataStore
    if request.param == "sqlite":
        store = SqliteStore(tmp_path / "meta.db")
    else:
        url: str = request.getfixturevalue("pg_url")
        store = PostgresStore(url, _pg_settings(url))
    await store.open()
    await store.migrate()
    try:
        yield store
    finally:
        await store.close()


async def test_a_duplicate_row_in_a_batch_is_a_unique_violation_and_stores_none(
    meta: MetadataStore,
) -> None:
    with pytest.raises(UniqueViolation):
        async with meta.transaction() as conn:
            await conn.executemany(ORG, [("o1", "acme"), ("o2", "acme")])
    async with meta.read() as conn:
        assert await conn.fetchall("SELECT id FROM orgs") == []


async def test_a_row_whose_parent_is_gone_is_not_found(meta: MetadataStore) -> None:
    with pytest.raises(NotFound, match=GONE):
        async with meta.transaction() as conn:
            await conn.execute(
                "INSERT INTO stack_tags (stack_id, name, value) VALUES (?, ?, ?)",
                ("no-such-stack", "k", "v"),
            )
    # The failed transaction was rolled back: the store goes on working.
    async with meta.transaction() as conn:
        await conn.execute(ORG, ("o1", "acme"))
    async with meta.read() as conn:
        assert await conn.fetchall("SELECT name FROM orgs") == [("acme",)]


async def test_postgres_refuses_a_nul_character_as_a_bad_request(pg_url: str) -> None:
    """Text columns cannot hold U+0000 in PostgreSQL (SQLite can): the client's value is
    wrong, not the server (400, not 500)."""
    store = PostgresStore(pg_url, _pg_settings(pg_url))
    await store.open()
    try:
        await store.migrate()
        with pytest.raises(BadRequest, match="cannot store"):
            async with store.transaction() as conn:
                await conn.execute(ORG, ("o1", "ac\x00me"))
    finally:
        await store.close()


async def test_sqlite_refuses_to_open_where_no_folder_can_be(tmp_path: Path) -> None:
    # The folder of the database file cannot be made: a file stands in its place. (A file
    # that sqlite itself cannot open fails the same way, but aiosqlite then stops its
    # thread through a future nobody awaits, which outlives a test's event loop.)
    (tmp_path / "data").write_text("not a folder")
    store = SqliteStore(tmp_path / "data" / "meta.db")
    with pytest.raises(ConfigurationError, match="cannot open SQLite database"):
        await store.open()


async def test_postgres_refuses_to_open_without_a_server() -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    with pytest.raises(ConfigurationError, match="cannot connect to PostgreSQL"):
        await PostgresStore(url, _pg_settings(url)).open()


async def test_postgres_locks_and_migrations_without_a_server_are_transient() -> None:
    """``exclusive`` and ``migrate`` use a connection of their own, outside the pool: a
    server that is down is worth a retry there too, not a crash of the collector."""
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    store = PostgresStore(url, _pg_settings(url))
    with pytest.raises(TransientStoreError):
        async with store.exclusive("gc"):
            pass
    with pytest.raises(TransientStoreError):
        await store.migrate()
