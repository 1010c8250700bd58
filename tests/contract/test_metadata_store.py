"""The MetadataStore contract (procella/metadata/base.py), on SQLite and PostgreSQL.

Two stores opened on one database stand for two replicas of a cluster.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from procella.errors import TransientStoreError
from procella.metadata import migrations
from procella.metadata.base import MetadataStore, StackSummaryRow, UniqueViolation, UpdateRecord
from procella.metadata.postgres import PostgresStore
from procella.metadata.queries import auth as auth_q
from procella.metadata.queries import checkpoints as checkpoint_q
from procella.metadata.queries import events as event_q
from procella.metadata.queries import gc as gc_q
from procella.metadata.queries import new_id
from procella.metadata.queries import stacks as stack_q
from procella.metadata.queries import updates as update_q
from procella.settings import Settings
from procella.state.texts import StoredText
from tests.contract.conftest import StoreFactory


async def make_stack(meta: MetadataStore, org: str = "acme", name: str = "dev") -> str:
    async with meta.transaction() as conn:
        org_id = await auth_q.ensure_org(conn, org)
        stack_id = new_id()
        await stack_q.insert(conn, stack_id, org_id, "web", name)
    return stack_id


async def start_update(meta: MetadataStore, stack_id: str, lease_hash: str = "h") -> str:
    async with meta.transaction() as conn:
        update_id = await update_q.insert(
            conn, stack_id, "update", is_preview=False, created_by="t"
        )
        version = await stack_q.next_version(conn, stack_id)
        await update_q.start(conn, update_id, version, lease_hash, 60_000)
    return update_id


async def test_migrate_is_idempotent(meta: MetadataStore) -> None:
    assert await meta.migrate() == []


async def test_transaction_commits_or_rolls_back(meta: MetadataStore) -> None:
    with pytest.raises(RuntimeError):
        async with meta.transaction() as conn:
            await auth_q.ensure_org(conn, "rolled-back")
            raise RuntimeError("abort")
    async with meta.transaction() as conn:
        await auth_q.ensure_org(conn, "kept")
    async with meta.read() as conn:
        assert await auth_q.org_id(conn, "rolled-back") is None
        assert await auth_q.org_id(conn, "kept") is not None


async def test_duplicate_stack_is_a_unique_violation(meta: MetadataStore) -> None:
    await make_stack(meta)
    with pytest.raises(UniqueViolation):
        await make_stack(meta)


async def test_now_ms_is_the_database_clock(meta: MetadataStore) -> None:
    async with meta.read() as conn:
        row = await conn.fetchone("SELECT NOW_MS")
    assert row is not None
    assert abs(int(row[0]) - time.time() * 1000) < 5_000


async def test_bytes_round_trip_exactly(meta: MetadataStore) -> None:
    stack_id = await make_stack(meta)
    data = bytes(range(256)) * 50
    async with meta.transaction() as conn:
        await checkpoint_q.put(conn, stack_id, 0, None, StoredText("sha", len(data), data, None), 7)
    async with meta.read() as conn:
        record = await checkpoint_q.get(conn, stack_id, 0)
    assert record is not None and record.data == data and record.blob_key is None
    assert record.resource_count == 7


async def test_one_running_non_preview_update_per_stack(meta: MetadataStore) -> None:
    stack_id = await make_stack(meta)
    await start_update(meta, stack_id)
    with pytest.raises(UniqueViolation):
        await start_update(meta, stack_id)
    async with meta.transaction() as conn:  # previews never hold the stack
        for _ in range(2):
            preview = await update_q.insert(
                conn, stack_id, "update", is_preview=True, created_by="t"
            )
            await update_q.start(conn, preview, None, "p", 60_000)


async def test_row_lock_serializes_replicas(
    store_factory: StoreFactory, meta: MetadataStore
) -> None:
    """Two replicas read-modify-write one stack row under its lock: no update is lost."""
    stack_id = await make_stack(meta)
    other = store_factory()
    await other.open()
    try:

        async def bump(store: MetadataStore) -> None:
            async with store.transaction() as conn:
                found = await stack_q.get_by_id(conn, stack_id, lock=True)
                assert found is not None
                await asyncio.sleep(0.2)  # hold the lock while the other replica tries
                await conn.execute(
                    "UPDATE stacks SET version = ? WHERE id = ?", (found.version + 1, stack_id)
                )

        await asyncio.gather(bump(meta), bump(other), bump(meta), bump(other))
    finally:
        await other.close()
    async with meta.read() as conn:
        found = await stack_q.get_by_id(conn, stack_id)
    assert found is not None and found.version == 4


async def test_reads_do_not_see_uncommitted_writes(meta: MetadataStore) -> None:
    stack_id = await make_stack(meta)
    entered, release = asyncio.Event(), asyncio.Event()

    async def writer() -> None:
        async with meta.transaction() as conn:
            await stack_q.next_version(conn, stack_id)
            entered.set()
            await release.wait()

    task = asyncio.create_task(writer())
    await entered.wait()
    async with meta.read() as conn:
        found = await stack_q.get_by_id(conn, stack_id)
    release.set()
    await task
    assert found is not None and found.version == 0


def full_step(seq: int, text: bytes) -> checkpoint_q.Step:
    stored = StoredText(text.decode(), len(text), text, None)
    return checkpoint_q.Step(seq, text.decode(), len(text), 0, 1, text=stored)


def delta_step(seq: int, digest: str, edits: bytes, base: int | None = None) -> checkpoint_q.Step:
    return checkpoint_q.Step(seq, digest, 9, seq * 10, 1, edits=edits, base_version=base)


async def current(meta: MetadataStore, update_id: str) -> UpdateRecord:
    async with meta.read() as conn:
        update = await update_q.get(conn, update_id)
    assert update is not None
    return update


async def test_save_step_is_a_compare_and_set(meta: MetadataStore) -> None:
    stack_id = await make_stack(meta)
    update_id = await start_update(meta, stack_id, "lease")

    async def save(lease: str, update: UpdateRecord, step: checkpoint_q.Step) -> bool:
        async with meta.single_write() as conn:
            saved, _ = await checkpoint_q.save_step(conn, update, lease, step)
        return saved

    before = await current(meta, update_id)
    assert await save("lease", before, full_step(1, b"one"))
    assert not await save("lease", before, full_step(1, b"two"))  # stale: step 1 is taken
    assert not await save("other-lease", await current(meta, update_id), full_step(2, b"two"))
    async with meta.transaction() as conn:  # the lease runs out
        await conn.execute("UPDATE updates SET lease_expires_at = 0 WHERE id = ?", (update_id,))
    assert not await save("lease", await current(meta, update_id), full_step(2, b"two"))
    update = await current(meta, update_id)
    assert update.checkpoint_seq == 1 and not update.lease_live
    async with meta.read() as conn:
        record = await checkpoint_q.get(conn, stack_id, 1)
    assert record is not None and record.data == b"one" and record.sha256 == "one"


async def test_steps_store_deltas_and_a_full_text_supersedes_them(meta: MetadataStore) -> None:
    stack_id = await make_stack(meta)
    async with meta.transaction() as conn:  # version 0: a full text the deltas build on
        await checkpoint_q.put(conn, stack_id, 0, None, StoredText("s0", 4, b"base", None), 0)
    update_id = await start_update(meta, stack_id, "lease")

    async def save(step: checkpoint_q.Step) -> str | None:
        async with meta.single_write() as conn:
            saved, superseded = await checkpoint_q.save_step(
                conn, await current(meta, update_id), "lease", step
            )
        assert saved
        return superseded

    assert await save(delta_step(1, "s1", b"d1", base=0)) is None
    assert await save(delta_step(2, "s2", b"d2")) is None
    async with meta.read() as conn:
        record = await checkpoint_q.get(conn, stack_id, 1)
        assert record is not None
        assert (record.base_version, record.full_seq, record.seq) == (0, 0, 2)
        assert (record.sha256, record.chain_bytes, record.data) == ("s2", 20, None)
        assert await checkpoint_q.deltas(conn, stack_id, 1, 0, 2) == [b"d1", b"d2"]
    blob = StoredText("s3", 5, None, "checkpoints/x/s3")
    assert await save(checkpoint_q.Step(3, "s3", 5, 0, 1, text=blob)) is None
    assert await save(delta_step(4, "s4", b"d4")) is None
    # The next full text supersedes the first: its blob key comes back to be deleted.
    assert await save(full_step(5, b"s5")) == "checkpoints/x/s3"
    async with meta.read() as conn:
        record = await checkpoint_q.get(conn, stack_id, 1)
        assert record is not None
        assert (record.base_version, record.full_seq, record.seq) == (None, 5, 5)
        assert (record.data, record.blob_key, record.chain_bytes) == (b"s5", None, 0)
        assert await checkpoint_q.deltas(conn, stack_id, 1, 0, 5) == []
    assert (await current(meta, update_id)).checkpoint_seq == 5


async def test_concurrent_save_steps_from_two_replicas_store_one(
    store_factory: StoreFactory, meta: MetadataStore
) -> None:
    stack_id = await make_stack(meta)
    update_id = await start_update(meta, stack_id, "lease")
    other = store_factory()
    await other.open()
    try:
        update = await current(meta, update_id)

        async def save(store: MetadataStore, body: bytes) -> bool:
            async with store.single_write() as conn:
                saved, _ = await checkpoint_q.save_step(conn, update, "lease", full_step(1, body))
            return saved

        results = await asyncio.gather(*(save(s, b) for s, b in [(meta, b"a"), (other, b"b")] * 3))
    finally:
        await other.close()
    assert results.count(True) == 1


async def test_events_insert_is_idempotent(meta: MetadataStore) -> None:
    stack_id = await make_stack(meta)
    update_id = await start_update(meta, stack_id)
    for _ in range(2):
        async with meta.transaction() as conn:
            events = [
                event_q.StoredEvent(0, "k", '{"a":0}', None),
                event_q.StoredEvent(1, "k", '{"a":null}', '[[5,"d"]]'),
            ]
            await event_q.insert_many(conn, stack_id, update_id, events, {"d": '{"s":1}'})
    async with meta.read() as conn:
        assert await event_q.page(conn, update_id, -1, 10) == [
            (0, '{"a":0}', None),
            (1, '{"a":null}', '[[5,"d"]]'),
        ]
        assert await event_q.states(conn, ["d", "e"]) == {"d": '{"s":1}'}


async def test_new_events_wait_while_the_gc_sweeps_their_stack(
    store_factory: StoreFactory, meta: MetadataStore
) -> None:
    """The GC drops a stack's reference to a state its retained events do not use, holding
    the stack (``FOR UPDATE``). A batch of events that finds the reference in place
    stores none of its own, so it must wait: had it committed meanwhile, the GC would drop
    the reference under it and then collect the state its event needs."""
    stack_id = await make_stack(meta)
    update_id = await start_update(meta, stack_id)
    other = store_factory()
    await other.open()
    try:
        async with other.transaction() as conn:
            await event_q.insert_many(
                conn, stack_id, update_id, [event_q.StoredEvent(0, "k", "{}", None)], {"d": "{}"}
            )

        async def insert_event_using_d() -> None:
            async with other.transaction() as conn:
                event = event_q.StoredEvent(1, "k", '{"a":null}', '[[5,"d"]]')
                await event_q.insert_many(conn, stack_id, update_id, [event], {"d": "{}"})

        async with meta.transaction() as conn:
            assert await stack_q.get_by_id(conn, stack_id, lock=True) is not None
            batch = asyncio.create_task(insert_event_using_d())
            await asyncio.sleep(0.5)
            assert not batch.done()
            await gc_q.drop_stack_states(conn, stack_id, ["d"])  # no event used d yet
        await batch
    finally:
        await other.close()
    async with meta.read() as conn:
        assert await gc_q.stack_states(conn, stack_id) == {"d"}


async def test_deleting_a_stack_deletes_what_hangs_off_it(meta: MetadataStore) -> None:
    stack_id = await make_stack(meta)
    update_id = await start_update(meta, stack_id)
    async with meta.transaction() as conn:
        await stack_q.replace_tags(conn, stack_id, {"a": "b"})
        await event_q.insert_many(
            conn, stack_id, update_id, [event_q.StoredEvent(0, "k", "{}", '[[0,"d"]]')], {"d": "{}"}
        )
        await checkpoint_q.put(conn, stack_id, 1, update_id, StoredText("s", 1, b"x", None), 0)
        await stack_q.delete(conn, stack_id)
    async with meta.read() as conn:
        for table in ("stack_tags", "updates", "checkpoints"):
            row = await conn.fetchone(f"SELECT COUNT(*) FROM {table}")
            assert row == (0,), table
        assert await conn.fetchone("SELECT COUNT(*) FROM update_events") == (0,)
        assert await conn.fetchone("SELECT COUNT(*) FROM stack_event_states") == (0,)
        # The state itself may be another stack's too: the GC collects it once unreferenced.
        assert await conn.fetchone("SELECT COUNT(*) FROM event_states") == (1,)


async def test_list_page_is_keyset_ordered(meta: MetadataStore) -> None:
    for i in range(7):
        await make_stack(meta, name=f"s{i}")
    await make_stack(meta, org="other-org", name="x")
    seen: list[str] = []
    after = None
    while True:
        page = await _page(meta, after)
        if not page:
            break
        seen += [f"{r.org}/{r.name}" for r in page]
        after = (page[-1].org, page[-1].project, page[-1].name)
    assert seen == [f"acme/s{i}" for i in range(7)] + ["other-org/x"]


async def _page(meta: MetadataStore, after: tuple[str, str, str] | None) -> list[StackSummaryRow]:
    async with meta.read() as conn:
        return await stack_q.list_page(conn, stack_q.StackFilter(None), after, 3)


async def test_exclusive_has_one_holder_across_replicas(
    store_factory: StoreFactory, meta: MetadataStore
) -> None:
    other = store_factory()
    await other.open()
    try:
        async with meta.exclusive("gc") as first:
            async with other.exclusive("gc") as second:
                assert (first, second) == (True, False)
            async with meta.exclusive("gc") as again:  # not re-entrant either
                assert not again
        async with other.exclusive("gc") as after_release:
            assert after_release
    finally:
        await other.close()


async def test_errors_after_close_are_not_silent(store_factory: StoreFactory) -> None:
    store = store_factory()
    await store.open()
    await store.close()
    with pytest.raises((AssertionError, TransientStoreError)):
        async with store.read() as conn:
            await conn.fetchone("SELECT 1")


async def test_replicas_starting_together_migrate_once(store_factory: StoreFactory) -> None:
    stores = [store_factory() for _ in range(3)]
    for store in stores:
        await store.open()
    try:
        applied = await asyncio.gather(*(store.migrate() for store in stores))
    finally:
        for store in stores:
            await store.close()
    # One replica applies every migration; the others find nothing left to do.
    dialect = "postgres" if isinstance(stores[0], PostgresStore) else "sqlite"
    everything = [name for name, _ in migrations.load(dialect)]
    assert sorted(applied, key=len) == [[], [], everything]


async def test_migration_0009_keeps_each_stack_s_event_states(
    store_factory: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """References per (update, state) become one per (stack, state), none lost."""
    store = store_factory()
    await store.open()
    try:
        load = migrations.load
        monkeypatch.setattr(migrations, "load", lambda d: [m for m in load(d) if m[0] < "0009"])
        await store.migrate()
        stack_id = await make_stack(store)
        other_stack = await make_stack(store, name="other")
        updates = []
        for stack in (stack_id, stack_id, other_stack):
            updates.append(await start_update(store, stack))
            async with store.transaction() as conn:
                await conn.execute(
                    "UPDATE updates SET status = 'succeeded' WHERE id = ?", (updates[-1],)
                )
        async with store.transaction() as conn:
            for digest in ("a", "b", "c"):
                await conn.execute(
                    "INSERT INTO event_states (digest, body) VALUES (?, '{}')", (digest,)
                )
            for update_id, digest in zip(updates * 2, ["a", "a", "a", "b", "c", "c"], strict=True):
                await conn.execute(
                    "INSERT INTO event_state_refs (update_id, digest) VALUES (?, ?)",
                    (update_id, digest),
                )
        monkeypatch.setattr(migrations, "load", load)
        assert await store.migrate() == ["0009_stack_event_states.sql"]
        async with store.read() as conn:
            assert await gc_q.stack_states(conn, stack_id) == {"a", "b", "c"}
            assert await gc_q.stack_states(conn, other_stack) == {"a", "c"}
    finally:
        await store.close()


async def test_cancelled_requests_leave_the_store_usable(meta: MetadataStore) -> None:
    """A client that hangs up cancels its request at any await, mid-transaction included."""
    stack_id = await make_stack(meta)

    async def read() -> None:
        async with meta.read() as conn:
            await conn.fetchone("SELECT version FROM stacks WHERE id = ?", (stack_id,))
            await asyncio.sleep(0)

    async def write() -> None:
        async with meta.transaction() as conn:
            await stack_q.next_version(conn, stack_id)
            await asyncio.sleep(0)

    for delay in (0, 0.0005, 0.001, 0.002, 0.005):
        tasks = [asyncio.create_task(work()) for work in (read, write) * 10]
        await asyncio.sleep(delay)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for _ in range(3):
        await asyncio.wait_for(asyncio.gather(*(read() for _ in range(10)), write()), 10)


async def test_postgres_stores_checkpoint_texts_with_lz4(pg_url: str) -> None:
    """Where the server has lz4 (Debian's has), checkpoint texts use it, not slower pglz."""
    settings = Settings(database_url=pg_url, encryption_key="00" * 32)
    store = PostgresStore(pg_url, settings)
    await store.open()
    try:
        await store.migrate()
        async with store.read() as conn:
            row = await conn.fetchone(
                "SELECT attcompression FROM pg_attribute "
                "WHERE attrelid = 'checkpoints'::regclass AND attname = 'data'"
            )
    finally:
        await store.close()
    assert row == ("l",)
