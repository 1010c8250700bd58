"""No result may depend on which replica serves a request.

Three app instances share one PostgreSQL database and one S3 bucket, as three replicas
behind a load balancer would. Each call of an update goes to a different replica, and
concurrent calls race across replicas.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest

from procella import create_app
from procella.settings import Settings
from tests.helpers import (
    Api,
    assert_error,
    assert_ok,
    compact,
    delta_between,
    journal_entry,
    services_of,
    sha256_hex,
    stdout_event,
    summary_event,
    untyped,
)

STACK = "acme/web/dev"


@pytest.fixture
async def replicas(cluster_settings: Settings) -> AsyncIterator[list[Api]]:
    # Small inline limit: checkpoint texts go to S3, so replicas must share those too.
    settings = cluster_settings.replace(checkpoint_inline_max_bytes=256)
    async with (
        create_app(settings).test_app() as r0,
        create_app(settings).test_app() as r1,
        create_app(settings).test_app() as r2,
    ):
        yield [Api(r.test_client()) for r in (r0, r1, r2)]


async def test_each_call_on_another_replica(replicas: list[Api]) -> None:
    r0, r1, r2 = replicas
    await r0.new_stack(STACK)
    update = await r2.begin(await r1.new_update(STACK))
    first = compact(untyped(5))
    second = compact(untyped(8))
    await assert_ok(await r0.verbatim(update, first, 1), 204)
    # r1 never saw the first text: it must find the delta's base in the shared stores.
    edits = delta_between(first, second)
    await assert_ok(await r1.delta(update, edits, sha256_hex(second), 2), 204)
    await assert_ok(await r2.renew(update), 200)
    await assert_ok(
        await r0.events(update, [stdout_event(0), summary_event(1, {"create": 7})]), 204
    )
    await assert_ok(await r1.complete(update), 204)
    assert await r2.export_bytes(STACK) == second
    [info] = await r0.history(STACK)
    assert (info["result"], info["resourceCount"], info["resourceChanges"]) == (
        "succeeded",
        8,
        {"create": 7},
    )
    assert (await r1.stack_json(STACK))["activeUpdate"] == ""


async def test_concurrent_starts_on_different_replicas_let_one_win(replicas: list[Api]) -> None:
    await replicas[0].new_stack(STACK)
    updates = [await replicas[i % 3].new_update(STACK) for i in range(6)]
    responses = await asyncio.gather(
        *(replicas[i % 3].start_update(u) for i, u in enumerate(updates))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 409, 409, 409, 409, 409]
    for response in responses:
        if response.status_code == 409:
            assert await assert_error(response, 409) == "Another update is currently in progress."
    winner = updates[[r.status_code for r in responses].index(200)]
    assert (await replicas[2].stack_json(STACK))["activeUpdate"] == winner.id


async def test_racing_checkpoints_store_exactly_one_per_sequence(replicas: list[Api]) -> None:
    await replicas[0].new_stack(STACK)
    update = await replicas[1].started(STACK)
    texts = [compact(untyped(n)) for n in (2, 3, 4, 5, 6, 7)]
    responses = await asyncio.gather(
        *(replicas[i % 3].verbatim(update, text, 1) for i, text in enumerate(texts))
    )
    codes = [r.status_code for r in responses]
    assert sorted(codes) == [204, 409, 409, 409, 409, 409]
    winner = texts[codes.index(204)]
    # Retries of the winning write, from any replica, are accepted and change nothing.
    retries = await asyncio.gather(*(r.verbatim(update, winner, 1) for r in replicas))
    assert [r.status_code for r in retries] == [204, 204, 204]
    await assert_ok(await replicas[2].complete(update), 204)
    assert await replicas[0].export_bytes(STACK) == winner


async def test_racing_completes_and_events_are_idempotent(replicas: list[Api]) -> None:
    await replicas[0].new_stack(STACK)
    update = await replicas[0].started(STACK)
    batch = [stdout_event(i) for i in range(20)]
    await asyncio.gather(*(r.events(update, batch) for r in replicas))
    await assert_ok(await replicas[0].checkpoint(update, untyped(3)), 204)
    completes = await asyncio.gather(*(r.complete(update) for r in replicas * 2))
    assert all(r.status_code == 204 for r in completes), [r.status_code for r in completes]
    response = await replicas[1].call("GET", f"{update.path}/events")
    listed = json.loads(await assert_ok(response, 200))["events"]
    assert [e["sequence"] for e in listed] == list(range(20))
    [info] = await replicas[2].history(STACK)
    assert info["result"] == "succeeded" and info["version"] == 1


async def test_a_cancel_on_one_replica_ends_the_lease_on_all(replicas: list[Api]) -> None:
    r0, r1, r2 = replicas
    await r0.new_stack(STACK)
    update = await r0.started(STACK)
    await assert_ok(await r1.verbatim(update, compact(untyped(2)), 1), 204)
    await assert_ok(await r2.cancel(update), 204)
    await assert_error(await r0.verbatim(update, compact(untyped(3)), 2), 403)
    await assert_error(await r1.renew(update), 403)
    await assert_error(await r2.complete(update), 409)
    # The stack is free for the next update, from any replica.
    await r1.started(STACK)


async def test_leases_are_bound_to_their_update_on_every_replica(replicas: list[Api]) -> None:
    r0, r1, r2 = replicas
    await r0.new_stack(STACK)
    await r0.new_stack("acme/web/other")
    mine = await r1.started(STACK)
    theirs = await r2.started("acme/web/other")
    await assert_error(await r0.verbatim(theirs, compact(untyped(1)), 1, lease=mine.token), 403)
    await assert_error(await r2.renew(theirs, lease=mine.token), 403)
    await assert_ok(await r0.verbatim(theirs, compact(untyped(1)), 1), 204)


async def test_a_journal_sent_to_every_replica_is_one_state(replicas: list[Api]) -> None:
    """Consecutive batches of one journaling update land on different replicas, the export
    during the update and the complete on others: no replay state lives in one replica."""
    r0, r1, r2 = replicas
    await r0.new_stack(STACK)
    update = await r1.begin(await r0.new_update(STACK), {"journalVersion": 1})
    assert update.start["journalVersion"] == 1
    urn = "urn:pulumi:dev::web::pulumi-python:dynamic:Resource::"
    entries = [journal_entry(6, 1, secretsProvider={"type": "passphrase", "state": {}})]
    for i in range(6):
        state = {"urn": f"{urn}r{i}", "custom": True, "type": "pulumi-python:dynamic:Resource"}
        entries.append(
            journal_entry(0, 2 + 2 * i, i + 1, operation={"resource": state, "type": "creating"})
        )
        entries.append(journal_entry(1, 3 + 2 * i, i + 1, state=state))
    for i, batch in enumerate([entries[:4], entries[4:9], entries[9:]]):
        await assert_ok(await replicas[i].journal(update, batch), 204)
        # A retry of the same batch on another replica changes nothing.
        await assert_ok(await replicas[(i + 1) % 3].journal(update, batch), 204)
    during = json.loads(await r2.export_bytes(STACK))
    assert len(during["deployment"]["resources"]) == 6
    await assert_ok(await r0.complete(update), 204)
    for replica in replicas:
        final = json.loads(await replica.export_bytes(STACK))
        assert [r["urn"][-2:] for r in final["deployment"]["resources"]] == [
            f"r{i}" for i in range(6)
        ]
    [info] = await r1.history(STACK)
    assert (info["result"], info["resourceCount"]) == ("succeeded", 6)


async def test_a_replica_behind_catches_up_by_the_deltas_it_missed(
    cluster_settings: Settings,
) -> None:
    # Behind a load balancer the steps of one update land on every replica in turn. A
    # replica whose newest text of the stack is an earlier step of the update applies the
    # deltas since then, and does not read the full text from the blob store again.
    settings = cluster_settings.replace(checkpoint_inline_max_bytes=256)
    async with create_app(settings).test_app() as a, create_app(settings).test_app() as b:
        first, second = Api(a.test_client()), Api(b.test_client())
        blob_reads = {id(a): 0, id(b): 0}
        for app in (a, b):
            store = services_of(app).updates.states.texts
            read = store.blobs.get

            async def counted(key: str, read=read, app=app) -> bytes:
                blob_reads[id(app)] += 1
                data: bytes = await read(key)
                return data

            setattr(store.blobs, "get", counted)  # noqa: B010 - a method replaced, on purpose
        await first.new_stack(STACK)
        update = await first.started(STACK)
        texts = [compact(untyped(n)) for n in range(20, 26)]
        await assert_ok(await first.verbatim(update, texts[0], 1), 204)
        for seq in range(2, len(texts) + 1):
            api = second if seq % 2 == 0 else first
            edits = delta_between(texts[seq - 2], texts[seq - 1])
            await assert_ok(await api.delta(update, edits, sha256_hex(texts[seq - 1]), seq), 204)
        # b read the full text once (step 2); each later step came from its own newest text.
        assert blob_reads == {id(a): 0, id(b): 1}
        await assert_ok(await first.complete(update), 204)
        assert await second.export_bytes(STACK) == texts[-1]


async def test_a_revoked_token_is_refused_by_every_replica_within_the_cache_delay(
    cluster_settings: Settings,
) -> None:
    settings = cluster_settings.replace(auth_cache_seconds=1.0)
    async with (
        create_app(settings).test_app() as r0,
        create_app(settings).test_app() as r1,
    ):
        first, second = Api(r0.test_client()), Api(r1.test_client())
        minted = await first.call("POST", "/api/orgs/organization/tokens", {"name": "ci"})
        created = await minted.get_json()
        bot0, bot1 = first.as_token(created["tokenValue"]), second.as_token(created["tokenValue"])
        assert (await bot1.call("GET", "/api/user")).status_code == 200  # cached on r1 now
        path = f"/api/orgs/organization/tokens/{created['id']}"
        assert (await first.call("DELETE", path)).status_code == 204
        assert (await bot0.call("GET", "/api/user")).status_code == 401  # here: at once
        revoked_at = time.monotonic()
        while (await bot1.call("GET", "/api/user")).status_code != 401:
            assert time.monotonic() - revoked_at < 1.5, "r1 still accepts a revoked token"
            await asyncio.sleep(0.05)


async def test_a_removed_grant_is_refused_by_every_replica_within_the_cache_delay(
    cluster_settings: Settings,
) -> None:
    settings = cluster_settings.replace(auth_cache_seconds=1.0)
    async with (
        create_app(settings).test_app() as r0,
        create_app(settings).test_app() as r1,
    ):
        first, second = Api(r0.test_client()), Api(r1.test_client())
        await first.new_stack(STACK)
        minted = await first.call(
            "POST", "/api/orgs/acme/tokens", {"name": "ci", "login": "vera", "role": "viewer"}
        )
        vera0 = first.as_token((await minted.get_json())["tokenValue"])
        vera1 = second.as_token(vera0.token)
        teams = "/api/orgs/acme/teams"
        await assert_ok(await first.call("POST", teams, {"name": "web"}), 201)
        for change in (
            {"memberAction": "add", "member": "vera"},
            {"addProjectPermission": {"projectName": "web", "permission": "write"}},
        ):
            await assert_ok(await first.call("PATCH", f"{teams}/web", change), 200)
        # r1 learns of the grant within the cache delay, then caches it.
        deadline = time.monotonic() + 1.5
        while (await vera1.create_update(STACK)).status_code != 200:
            assert time.monotonic() < deadline, "r1 does not see the new grant"
            await asyncio.sleep(0.05)
        removal = {"removeProject": {"projectName": "web"}}
        await assert_ok(await first.call("PATCH", f"{teams}/web", removal), 200)
        await assert_error(await vera0.create_update(STACK), 403)  # here: at once
        removed_at = time.monotonic()
        while (await vera1.create_update(STACK)).status_code != 403:
            assert time.monotonic() - removed_at < 1.5, "r1 still honours a removed grant"
            await asyncio.sleep(0.05)
