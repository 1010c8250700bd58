"""The garbage collector: what one cycle removes, and what it must never touch.

Runs on both deployment kinds (SQLite + local files, PostgreSQL + S3).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from quart.typing import TestAppProtocol as AppUnderTest

from procella.metadata.base import AuditEntry, AuditFilter
from procella.metadata.queries import audit as audit_q
from procella.services import Services
from procella.settings import Settings
from procella.workers.gc import BLOB_PREFIX, run_gc_once
from tests.helpers import (
    Api,
    Update,
    assert_ok,
    compact,
    count_rows,
    expire_lease,
    services_of,
    started_app,
    stdout_event,
    step_events,
    untyped,
)

STACK = "acme/web/dev"


@pytest.fixture(
    params=["embedded", pytest.param("cluster", marks=[pytest.mark.postgres, pytest.mark.s3])]
)
async def app(request: pytest.FixtureRequest) -> AsyncIterator[AppUnderTest]:
    settings: Settings = request.getfixturevalue(f"{request.param}_settings")
    # Texts over 100 bytes go to the blob store, so blob collection has work to do.
    settings = settings.replace(checkpoint_inline_max_bytes=100)
    async with started_app(settings) as test_app:
        yield test_app


def services(app: AppUnderTest) -> Services:
    found: Services = services_of(app)
    return found


async def gc(app: AppUnderTest, **changes: object) -> object:
    found = services(app)
    return await run_gc_once(found.meta, found.blobs, found.settings.replace(**changes))


async def execute(app: AppUnderTest, sql: str, *params: object) -> None:
    async with services(app).meta.transaction() as conn:
        await conn.execute(sql, params)


async def audit_entries(app: AppUnderTest, action: str | None = None) -> list[AuditEntry]:
    async with services(app).meta.read() as conn:
        return await audit_q.page(conn, AuditFilter(action=action), None, 1000)


async def blob_keys(app: AppUnderTest) -> set[str]:
    return {info.key async for info in services(app).blobs.scan(BLOB_PREFIX)}


async def test_expired_leases_are_cancelled_after_the_grace_period(app: AppUnderTest) -> None:
    api = Api(app.test_client())
    await api.new_stack(STACK)
    update = await api.started(STACK)
    await gc(app, gc_lease_grace_seconds=0)
    assert (await api.stack_json(STACK))["activeUpdate"] == update.id  # the lease is live
    # Expired just now: still within a 30 s grace.
    await execute(
        app, "UPDATE updates SET lease_expires_at = NOW_MS - 1000 WHERE id = ?", update.id
    )
    report = await gc(app, gc_lease_grace_seconds=30)
    assert report.expired_leases == 0  # type: ignore[attr-defined]
    assert (await api.stack_json(STACK))["activeUpdate"] == update.id
    await expire_lease(app, update.id)
    report = await gc(app, gc_lease_grace_seconds=30)
    assert report.expired_leases == 1  # type: ignore[attr-defined]
    assert (await api.stack_json(STACK))["activeUpdate"] == ""
    status = await api.status(update)
    assert (await status.get_json())["status"] == "cancelled"
    [expired] = await audit_entries(app, "update.expire")
    assert (expired.login, expired.target) == ("procella", "web/dev")
    assert expired.description == f"cancelled update {update.id}: its lease expired"
    await api.started(STACK)  # the stack is free


async def test_updates_never_started_expire(app: AppUnderTest) -> None:
    api = Api(app.test_client())
    await api.new_stack(STACK)
    old = await api.new_update(STACK)
    fresh = await api.new_update(STACK)
    await execute(app, "UPDATE updates SET created_at = NOW_MS - 7200000 WHERE id = ?", old.id)
    report = await gc(app)
    assert report.expired_unstarted == 1  # type: ignore[attr-defined]
    assert (await (await api.status(old)).get_json())["status"] == "cancelled"
    assert (await (await api.status(fresh)).get_json())["status"] == "not started"
    await api.begin(fresh)


async def test_unreferenced_blobs_go_only_after_the_grace_period(app: AppUnderTest) -> None:
    api = Api(app.test_client())
    await api.new_stack(STACK)
    update = await api.started(STACK)
    text = compact(untyped(3))
    await assert_ok(await api.verbatim(update, text, 1), 204)
    await assert_ok(await api.complete(update), 204)
    live = await blob_keys(app)
    assert len(live) == 1  # over 100 bytes: the stack's first state is a blob
    # A blob no row points at: what a replica leaves when it dies between writing a blob
    # and the row, or when deleting a superseded one failed.
    stack_id = (await api.stack_json(STACK))["id"]
    orphan = f"{BLOB_PREFIX}{stack_id}/orphan"
    await services(app).blobs.put(orphan, b"{}")
    await gc(app, gc_blob_grace_seconds=3600)
    assert await blob_keys(app) == live | {orphan}  # young ones may belong to a write in flight
    report = await gc(app, gc_blob_grace_seconds=0)
    assert report.deleted_blobs == 1  # type: ignore[attr-defined]
    assert await blob_keys(app) == live
    assert await api.export_bytes(STACK) == text  # the live blob is untouched


async def test_events_of_old_updates_are_pruned(app: AppUnderTest) -> None:
    api = Api(app.test_client())
    await api.new_stack(STACK)
    old = await api.started(STACK)
    await assert_ok(await api.events(old, [stdout_event(0), stdout_event(1)]), 204)
    await assert_ok(await api.complete(old), 204)
    recent = await api.started(STACK)
    await assert_ok(await api.events(recent, [stdout_event(0)]), 204)
    await assert_ok(await api.complete(recent), 204)
    hundred_days_ms = 100 * 86_400_000
    await execute(
        app, "UPDATE updates SET ended_at = NOW_MS - ? WHERE id = ?", hundred_days_ms, old.id
    )
    report = await gc(app, event_retention_days=90)
    assert report.pruned_events == 2  # type: ignore[attr-defined]
    listed = await (await api.call("GET", f"{recent.path}/events")).get_json()
    assert [e["sequence"] for e in listed["events"]] == [0]
    report = await gc(app, event_retention_days=0)  # 0 keeps events forever
    assert report.pruned_events == 0  # type: ignore[attr-defined]


async def test_a_stack_s_old_events_go_together_about_once_a_day(app: AppUnderTest) -> None:
    """Pruning sweeps all the stack's events (its references to states): it waits until
    the oldest events are a day past the retention, then takes all that are past it."""
    api = Api(app.test_client())
    await api.new_stack(STACK)
    updates = []
    for _ in range(3):
        updates.append(await api.started(STACK))
        await assert_ok(await api.events(updates[-1], [stdout_event(0)]), 204)
        await assert_ok(await api.complete(updates[-1]), 204)
    day_ms = 86_400_000

    async def ended_days_ago(update: Update, days: float) -> None:
        sql = "UPDATE updates SET ended_at = NOW_MS - ? WHERE id = ?"
        await execute(app, sql, int(days * day_ms), update.id)

    await ended_days_ago(updates[0], 90.9)
    await ended_days_ago(updates[1], 90.2)
    assert (await gc(app, event_retention_days=90)).pruned_events == 0  # type: ignore[attr-defined]
    await ended_days_ago(updates[0], 91.1)
    assert (await gc(app, event_retention_days=90)).pruned_events == 2  # type: ignore[attr-defined]
    assert await count_rows(app, "update_events") == 1


async def test_step_states_go_with_the_last_events_that_refer_to_them(app: AppUnderTest) -> None:
    api = Api(app.test_client())
    await api.new_stack(STACK)
    old = await api.started(STACK)
    await assert_ok(
        await api.events(
            old, step_events(0, [("create", "a", None, "1"), ("create", "b", None, "1")])
        ),
        204,
    )
    await assert_ok(await api.complete(old), 204)
    recent = await api.started(STACK)
    kept = step_events(0, [("same", "a", "1", "1"), ("create", "c", None, "1")])
    await assert_ok(await api.events(recent, kept), 204)
    await assert_ok(await api.complete(recent), 204)
    assert await count_rows(app, "event_states") == 3
    # One reference per state of the stack: `a` repeated by the second update adds none.
    assert await count_rows(app, "stack_event_states") == 3
    await execute(
        app, "UPDATE updates SET ended_at = NOW_MS - ? WHERE id = ?", 100 * 86_400_000, old.id
    )

    report = await gc(app, event_retention_days=90)
    assert report.pruned_event_states == 1  # type: ignore[attr-defined]  # b's, in old alone
    assert await count_rows(app, "stack_event_states") == 2
    listed = await (await api.call("GET", f"{recent.path}/events")).get_json()
    assert listed["events"] == kept

    assert (await api.call("DELETE", f"/api/stacks/{STACK}")).status_code == 204
    report = await gc(app)
    assert report.pruned_event_states == 2  # type: ignore[attr-defined]
    assert await count_rows(app, "event_states") == 0


async def test_audit_entries_past_their_retention_are_pruned(app: AppUnderTest) -> None:
    api = Api(app.test_client())
    await api.new_stack(STACK)
    await api.new_stack("acme/web/prod")
    [prod, dev] = await audit_entries(app)
    year_ms = 366 * 86_400_000
    await execute(app, "UPDATE audit_log SET at = NOW_MS - ? WHERE id = ?", year_ms, dev.id)
    report = await gc(app, audit_retention_days=0)  # 0 keeps them
    assert report.pruned_audit_entries == 0  # type: ignore[attr-defined]
    report = await gc(app, audit_retention_days=365)
    assert report.pruned_audit_entries == 1  # type: ignore[attr-defined]
    assert await audit_entries(app) == [prod]
