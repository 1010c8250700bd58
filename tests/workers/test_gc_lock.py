"""One garbage collector at a time across replicas, under the PostgreSQL advisory lock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from procella.blobs.local import LocalBlobStore
from procella.metadata.base import MetadataStore
from procella.metadata.postgres import LOCK_KEYS, PostgresStore, lock_key
from procella.metadata.queries import updates as update_q
from procella.settings import Settings
from procella.workers.supervisor import Supervisor
from tests.contract.test_metadata_store import make_stack


@pytest.fixture
async def replicas(cluster_settings: Settings, tmp_path: object) -> AsyncIterator[list[Supervisor]]:
    """Two replicas' supervisors on one database (blobs are irrelevant here)."""
    supervisors = []
    for i in range(2):
        meta = PostgresStore(cluster_settings.database_url, cluster_settings)
        await meta.open()
        if i == 0:
            await meta.migrate()
        blobs = LocalBlobStore(tmp_path / f"blobs{i}")  # type: ignore[operator]
        await blobs.open()
        supervisors.append(Supervisor(meta, blobs, cluster_settings))
    yield supervisors
    for supervisor in supervisors:
        await supervisor.meta.close()


async def blocked_cycle(meta: MetadataStore) -> tuple[asyncio.Event, asyncio.Task[None]]:
    """Hold a row lock that the next GC cycle waits for (an update never started, due to
    expire), so the cycle stalls while holding the GC lock. Returns (release, holder task)."""
    stack_id = await make_stack(meta)
    async with meta.transaction() as conn:
        update_id = await update_q.insert(
            conn, stack_id, "update", is_preview=False, created_by="t"
        )
        await conn.execute("UPDATE updates SET created_at = 0 WHERE id = ?", (update_id,))
    release, locked = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with meta.transaction() as conn:
            await conn.fetchone("SELECT id FROM updates WHERE id = ? FOR UPDATE", (update_id,))
            locked.set()
            await release.wait()

    task = asyncio.create_task(hold())
    await locked.wait()
    return release, task


async def test_only_one_replica_collects_at_a_time(replicas: list[Supervisor]) -> None:
    first, second = replicas
    release, holder = await blocked_cycle(first.meta)
    running = asyncio.create_task(first.gc_tick())
    await _until_lock_held(first.meta)
    assert await second.gc_tick() is False  # the other replica skips this cycle
    release.set()
    await holder
    assert await running is True
    assert await second.gc_tick() is True  # next tick, the lock is free again


async def test_a_dead_holder_passes_the_turn_on(replicas: list[Supervisor]) -> None:
    first, second = replicas
    release, holder = await blocked_cycle(first.meta)
    running = asyncio.create_task(first.gc_tick())
    pid = await _until_lock_held(first.meta)
    assert await second.gc_tick() is False
    # The holder's lock connection dies (crash, network): PostgreSQL frees its lock.
    async with first.meta.read() as conn:
        await conn.fetchone("SELECT pg_terminate_backend(?)", (pid,))
    taking_over = asyncio.create_task(second.gc_tick())
    assert await _until_lock_held(first.meta, other_than=pid) != pid
    release.set()
    await holder
    assert await asyncio.wait_for(taking_over, 30) is True
    # The stalled cycle finishes its work on pooled connections; its unlock is moot.
    await asyncio.wait_for(running, 30)


async def _until_lock_held(meta: MetadataStore, other_than: int = 0) -> int:
    """Wait until a session (not ``other_than``) holds the GC advisory lock in this
    database; return its pid."""
    key = LOCK_KEYS["gc"]
    for _ in range(200):
        async with meta.read() as conn:
            row = await conn.fetchone(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                "AND classid = ? AND objid = ?",
                ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF),
            )
        if row is not None and int(row[0]) != other_than:
            return int(row[0])
        await asyncio.sleep(0.05)
    raise AssertionError("no replica took the GC lock")


def test_lock_keys_are_the_historic_ones_and_fit_a_bigint() -> None:
    assert LOCK_KEYS["gc"] == 23769660933621571  # "TrataGC", as the TypeScript Procella
    # Keys are bound to pg_*advisory_lock(bigint) (PostgreSQL 15 has no hex literals):
    # each must fit a bigint, and no two names may share one.
    keys = [lock_key(name) for name in (*LOCK_KEYS, "other", "")]
    assert all(-(2**63) <= key < 2**63 for key in keys)
    assert len(set(keys)) == len(keys)
    assert lock_key("other") == -2798553888591940776  # a hash, the same in every process
