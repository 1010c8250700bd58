"""Checkpoint steps store what changed: deltas, a full text now and then, nothing left over.

Every test reads the state back through a fresh app on the same stores, so nothing is
proven from one replica's cache of recent texts.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from quart import typing as quart_typing

from procella import create_app
from procella.metadata.queries import checkpoints as checkpoint_q
from procella.settings import Settings
from procella.workers.gc import BLOB_PREFIX
from tests.helpers import (
    DEFAULT_ORG,
    Api,
    assert_error,
    assert_ok,
    compact,
    delta_between,
    services_of,
    sha256_hex,
    text_edit,
)

S = f"{DEFAULT_ORG}/proj/dev"


def state(sizes: dict[str, int], generation: int = 0) -> bytes:
    """A CLI-like state whose resource ``name`` carries ``size`` bytes of filler."""
    resources: list[dict[str, Any]] = [
        {
            "urn": f"urn:pulumi:dev::proj::pulumi-python:dynamic:Resource::{name}",
            "custom": True,
            "id": name,
            "type": "pulumi-python:dynamic:Resource",
            "outputs": {"fill": name[0] * size},
        }
        for name, size in sizes.items()
    ]
    manifest = {"time": f"2026-01-01T00:00:{generation:02d}Z", "magic": "", "version": "v3"}
    return compact({"version": 3, "deployment": {"manifest": manifest, "resources": resources}})


@asynccontextmanager
async def replica(settings: Settings) -> AsyncIterator[tuple[quart_typing.TestAppProtocol, Api]]:
    async with create_app(settings).test_app() as app:
        yield app, Api(app.test_client())


async def blob_keys(app: quart_typing.TestAppProtocol) -> set[str]:
    blobs = services_of(app).blobs
    return {info.key async for info in blobs.scan(BLOB_PREFIX)}


async def stored_bytes(app: quart_typing.TestAppProtocol, version: int) -> tuple[int, int]:
    """(delta bytes, inline full-text bytes) the stack holds for ``version``."""
    async with services_of(app).meta.read() as conn:
        deltas = await conn.fetchone(
            "SELECT COALESCE(SUM(LENGTH(edits)), 0) FROM checkpoint_deltas WHERE version = ?",
            (version,),
        )
        full = await conn.fetchone(
            "SELECT COALESCE(SUM(LENGTH(data)), 0) FROM checkpoints WHERE version = ?", (version,)
        )
    assert deltas is not None and full is not None
    return int(deltas[0]), int(full[0])


async def test_a_small_change_to_a_large_state_stores_only_the_change(
    settings: Settings,
) -> None:
    sizes = {f"r{i:03d}": 2000 for i in range(200)}  # ~400 KB
    first, second = state(sizes, 1), state({**sizes, "r100": 2100}, 2)
    async with replica(settings) as (app, api):
        await api.new_stack(S)
        update = await api.started(S)
        await assert_ok(await api.verbatim(update, first, 1), 204)
        await assert_ok(await api.complete(update), 204)
        nxt = await api.started(S)
        # Whole checkpoints, as with delta checkpoints off: the server finds the change.
        await assert_ok(await api.checkpoint(nxt, json.loads(second)), 204)
        await assert_ok(await api.complete(nxt), 204)
        written = await stored_bytes(app, nxt.version)
    # The 100-byte change plus the manifest's time, not a 400 KB copy.
    assert 0 < sum(written) < 2000, written
    async with replica(settings) as (_, fresh):
        assert json.loads(await fresh.export_bytes(S)) == json.loads(second)
        assert await fresh.export_bytes(S, update.version) == first


async def test_delta_steps_store_the_clis_edits_and_rebuild_anywhere(settings: Settings) -> None:
    sizes = {f"r{i:03d}": 1000 for i in range(100)}
    texts = [state(sizes, 0)]
    for step in range(1, 30):  # each step grows one resource
        sizes = {**sizes, f"r{step:03d}": 1000 + step}
        texts.append(state(sizes, step))
    async with replica(settings) as (app, api):
        await api.new_stack(S)
        update = await api.started(S)
        await assert_ok(await api.verbatim(update, texts[0], 1), 204)
        for seq in range(1, len(texts)):
            edits = delta_between(texts[seq - 1], texts[seq])
            response = await api.delta(update, edits, sha256_hex(texts[seq]), seq + 1)
            await assert_ok(response, 204)
        written, _ = await stored_bytes(app, update.version)
        assert written < len(texts[-1]), written  # 29 small deltas, not 29 copies
        await assert_ok(await api.complete(update), 204)
    async with replica(settings) as (_, fresh):
        assert await fresh.export_bytes(S) == texts[-1]


async def test_a_superseded_full_text_is_deleted_at_once(settings: Settings) -> None:
    """Steps that rewrite most of the state compact: each new full text replaces the last,
    and the old blob goes immediately, not after the GC's grace period."""
    changes = {"checkpoint_inline_max_bytes": 0}
    async with replica(settings.replace(**changes)) as (app, api):
        await api.new_stack(S)
        update = await api.started(S)
        texts = [state({f"r{i}": 30_000 for i in range(4)}, 1)]
        await assert_ok(await api.verbatim(update, texts[0], 1), 204)
        for seq in range(2, 12):
            text = state({f"{chr(96 + seq)}{i}": 30_000 for i in range(4)}, seq)
            await assert_ok(await api.verbatim(update, text, seq), 204)
            texts.append(text)
            assert len(await blob_keys(app)) == 1
        await assert_ok(await api.complete(update), 204)
    async with replica(settings.replace(**changes)) as (_, fresh):
        assert await fresh.export_bytes(S) == texts[-1]


async def test_a_stale_read_during_a_compaction_rebuilds_the_current_text(
    settings: Settings,
) -> None:
    async with replica(settings.replace(checkpoint_inline_max_bytes=0)) as (app, api):
        services = services_of(app)
        await api.new_stack(S)
        update = await api.started(S)
        first = state({"a": 50_000}, 1)
        await assert_ok(await api.verbatim(update, first, 1), 204)
        async with services.meta.read() as conn:
            row = await conn.fetchone("SELECT stack_id FROM checkpoints")
        assert row is not None
        async with services.meta.read() as conn:
            stale = await checkpoint_q.get(conn, row[0], update.version)
        assert stale is not None and stale.blob_key is not None
        # Steps that rewrite everything: a few of them outweigh the text, so one compacts.
        for seq in range(2, 6):
            latest = state({chr(96 + seq): 50_000}, seq)
            await assert_ok(await api.verbatim(update, latest, seq), 204)
        assert stale.blob_key not in await blob_keys(app)
        states = services.stacks.states
        states.texts.cache._items.clear()
        assert await states.load(stale) == latest


async def test_pending_operations_written_by_the_delta_writer_are_exported_readable(
    settings: Settings,
) -> None:
    """With delta checkpoints the CLI writes pending operations (only when there are more
    than nine) under `pendingOperations`, a key its own reader ignores: the export moves
    them to `pending_operations`, so a crash mid-update does not lose them."""
    resource: dict[str, Any] = {
        "urn": "urn:pulumi:dev::proj::pulumi-python:dynamic:Resource::r",
        "custom": True,
    }
    pending = [
        {"resource": {**resource, "urn": resource["urn"] + str(i)}, "type": "creating"}
        for i in range(10)
    ]
    manifest = {"time": "2026-01-01T00:00:00Z", "magic": "", "version": "v3"}
    text = compact(
        {
            "version": 3,
            "deployment": {
                "manifest": manifest,
                "resources": [resource],
                "pendingOperations": pending,
            },
        }
    )
    async with replica(settings) as (_, api):
        await api.new_stack(S)
        update = await api.started(S)
        await assert_ok(await api.verbatim(update, text, 1), 204)
        exported = json.loads(await api.export_bytes(S))
        assert exported["deployment"]["pending_operations"] == pending
        assert "pendingOperations" not in exported["deployment"]
        await assert_ok(await api.complete(update), 204)


async def test_insertions_at_one_offset_rebuild_in_the_order_they_were_sent(
    settings: Settings,
) -> None:
    """gotextdiff applies edits sorted stably by span, so two insertions at one offset go
    in the order they were sent; the hash the CLI sends is of that text. The stored edits
    must rebuild the same text on any replica (found by tests/property/test_deltas.py:
    the rebuild applied such insertions in reverse order, so the export differed from the
    checkpoint the server had acknowledged)."""
    first = state({"a": 10, "b": 10}, 1)
    at = first.index(b"bbbb")
    second = first[:at] + b"xy" + first[at:]
    edits = [text_edit(at, at, "x"), text_edit(at, at, "y")]
    async with replica(settings) as (_, api):
        await api.new_stack(S)
        update = await api.started(S)
        await assert_ok(await api.verbatim(update, first, 1), 204)
        await assert_ok(await api.delta(update, edits, sha256_hex(second), 2), 204)
        await assert_ok(await api.complete(update), 204)
    async with replica(settings) as (_, fresh):
        assert await fresh.export_bytes(S) == second


async def test_whole_steps_on_alternating_replicas_parse_what_changed(
    settings: Settings, monkeypatch: Any
) -> None:
    """Behind a load balancer, consecutive whole checkpoints land on different replicas. A
    replica that catches up by the deltas it missed keeps what it had checked of its own
    older text, so it parses only the resources changed since; and it refuses what a
    whole parse refuses."""
    from procella import strictjson

    parsed: list[int] = []
    real = strictjson.DECODER.decode

    def counting(text: str) -> Any:
        parsed.append(len(text))
        return real(text)

    monkeypatch.setattr(strictjson.DECODER, "decode", counting)
    sizes = {f"r{i:03d}": 1000 for i in range(100)}
    texts = []
    for step in range(5):  # each step grows one more resource
        sizes = {**sizes, f"r{step:03d}": 1001}
        texts.append(state(sizes, step))
    async with replica(settings) as (_, a), replica(settings) as (_, b):
        await a.new_stack(S)
        update = await a.started(S)
        await assert_ok(await a.verbatim(update, texts[0], 1), 204)  # parsed in pieces
        await assert_ok(await a.verbatim(update, texts[1], 2), 204)
        await assert_ok(await b.verbatim(update, texts[2], 3), 204)  # b knew nothing
        parsed.clear()
        await assert_ok(await a.verbatim(update, texts[3], 4), 204)
        # Step 3's change and step 4's, not the hundred resources.
        assert 1 <= len(parsed) <= 2, len(parsed)
        bad = texts[4].replace(b'"fill":"r', b'"fill":NaN,"x":"r', 1)
        assert bad != texts[4]
        await assert_error(await a.verbatim(update, bad, 5), 400)
        await assert_error(await b.verbatim(update, bad, 5), 400)
        await assert_ok(await b.verbatim(update, texts[4], 5), 204)
        await assert_ok(await a.complete(update), 204)
    async with replica(settings) as (_, fresh):
        assert await fresh.export_bytes(S) == texts[4]


async def test_a_text_that_never_reads_back_whole_is_a_503_not_a_500(settings: Settings) -> None:
    """A state that fails its digest at every read (here: the row's digest altered, as a
    compaction racing every attempt would look) answers a retryable 503 with the error body,
    and the stack stays readable once the row is right again."""
    async with replica(settings.replace(checkpoint_inline_max_bytes=0)) as (app, api):
        services = services_of(app)
        await api.new_stack(S)
        update = await api.started(S)
        text = state({"a": 50_000}, 1)
        await assert_ok(await api.verbatim(update, text, 1), 204)
        await assert_ok(await api.complete(update), 204)
        async with services.meta.transaction() as conn:
            await conn.execute("UPDATE checkpoints SET sha256 = ?", ("0" * 64,))
        services.stacks.states.texts.cache._items.clear()
        message = await assert_error(await api.export(S), 503)
        assert "changed while it was read" in message
        async with services.meta.transaction() as conn:
            await conn.execute("UPDATE checkpoints SET sha256 = ?", (sha256_hex(text),))
        assert await api.export_bytes(S) == text


async def test_a_replica_behind_a_compaction_rebuilds_from_the_new_full_text(
    settings: Settings,
) -> None:
    """A replica's newest text is from before another replica compacted the version: the
    deltas after it are gone, so it cannot catch up by them, and reads the new full text."""
    texts = [state({f"r{i}": 30_000 for i in range(4)}, 1)]
    texts += [state({f"{chr(96 + seq)}{i}": 30_000 for i in range(4)}, seq) for seq in range(2, 6)]
    grown = state({**{f"e{i}": 30_000 for i in range(4)}, "e3": 30_001}, 6)
    async with replica(settings) as (app, a), replica(settings) as (_, b):
        await a.new_stack(S)
        update = await a.started(S)
        await assert_ok(await a.verbatim(update, texts[0], 1), 204)
        for seq in range(2, 6):  # steps that rewrite everything: each compacts
            await assert_ok(await b.verbatim(update, texts[seq - 1], seq), 204)
        async with services_of(app).meta.read() as conn:
            stack_id = await conn.fetchone("SELECT stack_id FROM checkpoints")
            assert stack_id is not None
            row = await checkpoint_q.get(conn, stack_id[0], update.version)
        assert row is not None and row.base_version is None and row.full_seq > 1
        await assert_ok(await a.verbatim(update, grown, 6), 204)
        await assert_ok(await a.complete(update), 204)
    async with replica(settings) as (_, fresh):
        assert await fresh.export_bytes(S) == grown


@pytest.mark.parametrize("damage", ["one byte more", "truncated"])
async def test_a_replica_never_builds_on_a_cached_text_that_is_wrong(
    settings: Settings, damage: str
) -> None:
    """Catching up applies the missed deltas to the replica's own text and checks the
    result's hash; a text that does not hash (or that the deltas do not fit) is dropped
    for the stored one, whatever happened to it."""
    sizes = {f"r{i:03d}": 1000 for i in range(50)}
    texts = [state({**sizes, "r049": 1000 + step}, step) for step in range(4)]
    async with replica(settings) as (app, a), replica(settings) as (_, b):
        await a.new_stack(S)
        update = await a.started(S)
        await assert_ok(await a.verbatim(update, texts[0], 1), 204)
        await assert_ok(await a.verbatim(update, texts[1], 2), 204)
        await assert_ok(await b.verbatim(update, texts[2], 3), 204)  # a missed this step
        cache = services_of(app).stacks.states.texts.cache
        cached = cache.get(sha256_hex(texts[1]))
        assert cached == texts[1]
        at = cached.index(b'"fill":"r', len(cached) // 2)
        if damage == "one byte more":
            wrong = cached[:at] + b" " + cached[at:]
        else:
            wrong = cached[: len(cached) // 4]
        cache._items[sha256_hex(texts[1])] = wrong
        await assert_ok(await a.verbatim(update, texts[3], 4), 204)
        await assert_ok(await a.complete(update), 204)
    async with replica(settings) as (_, fresh):
        assert await fresh.export_bytes(S) == texts[3]
