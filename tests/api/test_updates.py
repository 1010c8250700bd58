"""The update lifecycle: create, start, renew, events, complete, cancel, one at a time."""

from __future__ import annotations

import asyncio
import gzip
import json
import time

import pytest
from quart import typing as quart_typing

from procella.metadata.queries import stacks as stack_q
from tests.helpers import (
    DEFAULT_ORG,
    Api,
    assert_error,
    assert_ok,
    body_json,
    count_rows,
    expire_lease,
    services_of,
    stdout_event,
    step_events,
    until_blocked,
    untyped,
)

S = f"{DEFAULT_ORG}/proj/dev"
CONFLICT = "Another update is currently in progress."


@pytest.fixture
async def stack(api: Api) -> str:
    return await api.new_stack(S)


@pytest.mark.parametrize(
    ("kind", "dry_run"),
    [("update", False), ("update", True), ("preview", True), ("refresh", False), ("destroy", True)],
)
async def test_create_update(api: Api, stack: str, kind: str, dry_run: bool) -> None:
    response = await api.create_update(stack, kind, dry_run=dry_run)
    assert response.status_code == 200
    body = await body_json(response)
    assert isinstance(body["updateID"], str) and body["updateID"]
    assert body["aiSettings"] == {"copilotIsEnabled": False}
    assert not body.get("requiredPolicies")
    status = await api.call("GET", f"/api/stacks/{stack}/update/{body['updateID']}")
    assert (await body_json(status))["status"] == "not started"


async def test_create_update_of_a_missing_stack_is_404(api: Api) -> None:
    await assert_error(await api.create_update(f"{DEFAULT_ORG}/proj/nope"), 404)


async def test_start_update(api: Api, stack: str) -> None:
    update = await api.new_update(stack)
    before = time.time()
    response = await api.start_update(
        update, {"tags": {"pulumi:project": "proj"}, "journalVersion": 1}
    )
    assert response.status_code == 200
    body = await body_json(response)
    assert body["version"] == 1
    assert isinstance(body["token"], str) and len(body["token"]) >= 16
    assert body["journalVersion"] == 1  # the CLI asked, and journaling is on by default
    assert before + 250 <= body["tokenExpiration"] <= time.time() + 301
    view = await api.stack_json(stack)
    assert view["activeUpdate"] == update.id
    assert view["tags"] == {"pulumi:project": "proj"}  # start tags replace the stack's
    assert view["currentOperation"]["kind"] == "update"
    assert view["currentOperation"]["author"] == "admin"
    assert view["currentOperation"]["started"] >= int(before) - 1
    status = await body_json(await api.status(update))
    assert status["status"] == "running"
    assert status["continuationToken"] is not None  # still running: keep polling


async def test_start_with_empty_body_and_without_tags_keeps_tags(api: Api) -> None:
    await api.new_stack(S, tags={"keep": "me"})
    update = await api.new_update(S)
    response = await api.call("POST", update.path)  # no body at all
    assert response.status_code == 200
    assert (await body_json(response))["token"]
    assert (await api.stack_json(S))["tags"] == {"keep": "me"}


async def test_preview_start_keeps_the_stack_version(api: Api, stack: str) -> None:
    await api.run_update(stack, untyped(1))
    preview = await api.started(stack, "preview", dry_run=True)
    assert preview.version == 1
    assert preview.token
    assert (await api.stack_json(stack))["activeUpdate"] == ""
    await assert_ok(await api.complete(preview), 204)
    assert (await api.stack_json(stack))["version"] == 1


async def test_start_twice_is_an_error(api: Api, stack: str) -> None:
    update = await api.started(stack)
    await assert_error(await api.start_update(update), 409)


async def test_start_unknown_update_is_404(api: Api, stack: str) -> None:
    response = await api.call("POST", f"/api/stacks/{stack}/update/0123456789abcdef", {})
    await assert_error(response, 404)


async def test_only_one_update_runs_per_stack(api: Api, stack: str) -> None:
    first = await api.started(stack)
    second = await api.new_update(stack)
    message = await assert_error(await api.start_update(second), 409)
    assert message == CONFLICT
    # The loser did not take a version or the stack.
    view = await api.stack_json(stack)
    assert view["activeUpdate"] == first.id
    assert view["version"] == 1
    # After the first completes, a new update starts normally.
    await assert_ok(await api.complete(first), 204)
    third = await api.started(stack)
    assert third.version == 2


async def test_concurrent_starts_exactly_one_wins(api: Api, stack: str) -> None:
    updates = [await api.new_update(stack) for _ in range(6)]
    responses = await asyncio.gather(*(api.start_update(u) for u in updates))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 409, 409, 409, 409, 409]
    for response in responses:
        if response.status_code == 409:
            assert await assert_error(response, 409) == CONFLICT


async def test_previews_never_conflict_and_never_block(api: Api, stack: str) -> None:
    running = await api.started(stack)
    # Previews of every flavour start beside a running update...
    p1 = await api.started(stack, "preview", dry_run=True)
    p2 = await api.started(stack, "update", dry_run=True)
    p3 = await api.started(stack, "refresh", dry_run=True)
    await assert_ok(await api.complete(running), 204)
    # ...and an update starts while previews are still running.
    update = await api.started(stack)
    assert update.version == 2
    for p in (p1, p2, p3):
        await assert_ok(await api.complete(p), 204)
    await assert_ok(await api.complete(update), 204)


async def test_start_succeeds_when_the_running_lease_expired(app, api: Api, stack: str) -> None:
    stuck = await api.started(stack)
    await assert_error(await api.start_update(await api.new_update(stack)), 409)
    await expire_lease(app, stuck.id)
    fresh = await api.started(stack)
    assert fresh.version == stuck.version + 1
    assert (await api.stack_json(stack))["activeUpdate"] == fresh.id
    # The abandoned update is over: its lease works nowhere any more.
    await assert_error(await api.renew(stuck), 403)
    await assert_error(await api.checkpoint(stuck, untyped(1)), 403)
    assert (await body_json(await api.status(stuck)))["status"] in ("cancelled", "failed")


async def test_renew_lease(api: Api, stack: str) -> None:
    update = await api.started(stack)
    before = time.time()
    response = await api.renew(update, 120)
    assert response.status_code == 200
    body = await body_json(response)
    assert body["token"] == update.token
    assert before + 100 <= body["tokenExpiration"] <= time.time() + 121
    # The duration is capped (at lease_max_seconds, 300 by default).
    first_expiry = body["tokenExpiration"]
    body = await body_json(await api.renew(update, 100_000))
    assert first_expiry < body["tokenExpiration"] <= time.time() + 301
    assert body["token"] == update.token
    # The token still works for the other lease calls.
    await assert_ok(await api.events(update, [stdout_event(0)]), 204)


async def test_renew_with_a_short_maximum(custom_app) -> None:
    async with custom_app(lease_max_seconds=30) as (_, api):
        await api.new_stack(S)
        update = await api.started(S)
        assert update.start["tokenExpiration"] <= time.time() + 31
        body = await body_json(await api.renew(update, 300))
        assert body["tokenExpiration"] <= time.time() + 31


async def test_renew_for_a_preview(api: Api, stack: str) -> None:
    preview = await api.started(stack, "preview", dry_run=True)
    assert (await api.renew(preview)).status_code == 200


async def test_events_batch_and_listing(api: Api, stack: str) -> None:
    update = await api.started(stack)
    # Out-of-order batches (the CLI sends up to 3 at once) and a duplicate within a batch.
    await assert_ok(await api.events(update, [stdout_event(3), stdout_event(4)]), 204)
    await assert_ok(
        await api.events(update, [stdout_event(0), stdout_event(1), stdout_event(1)]), 204
    )
    # A retry of a whole batch is a no-op.
    await assert_ok(await api.events(update, [stdout_event(0), stdout_event(1)]), 204)
    await assert_ok(await api.events(update, [stdout_event(2, "two")]), 204)
    response = await api.call("GET", f"{update.path}/events")
    assert response.status_code == 200
    body = await body_json(response)
    assert [e["sequence"] for e in body["events"]] == [0, 1, 2, 3, 4]
    assert body["events"][2] == stdout_event(2, "two")
    # Still running: the listing tells the reader to come back.
    token = body["continuationToken"]
    assert token is not None
    later = await body_json(
        await api.call("GET", f"{update.path}/events", query={"continuationToken": token})
    )
    assert later["events"] == []
    await assert_ok(await api.complete(update), 204)
    done = await body_json(await api.call("GET", f"{update.path}/events"))
    assert len(done["events"]) == 5
    assert done["continuationToken"] is None


async def test_step_events_list_back_and_store_each_state_once(
    app: quart_typing.TestAppProtocol, api: Api, stack: str
) -> None:
    created = step_events(0, [("create", n, None, "v1") for n in ("a", "b", "c")])
    first = await api.started(stack)
    await assert_ok(await api.events(first, [*created, stdout_event(6)]), 204)
    await assert_ok(await api.complete(first), 204)
    assert await count_rows(app, "event_states") == 3

    # The next update: two `same` steps and one change. Only the new state is stored.
    changed = step_events(0, [("same", "a", "v1", "v1"), ("same", "b", "v1", "v1")])
    changed += step_events(4, [("update", "c", "v1", "v2")])
    second = await api.started(stack)
    await assert_ok(await api.events(second, changed[:3]), 204)
    await assert_ok(await api.events(second, changed[2:]), 204)  # overlapping: a retry
    await assert_ok(await api.complete(second), 204)
    assert await count_rows(app, "event_states") == 4

    for update, sent in ((first, [*created, stdout_event(6)]), (second, changed)):
        listed = await body_json(await api.call("GET", f"{update.path}/events"))
        assert listed["events"] == sent


async def test_events_listing_pages(api: Api, stack: str) -> None:
    update = await api.started(stack)
    await assert_ok(await api.events(update, [stdout_event(i) for i in range(700)]), 204)
    await assert_ok(await api.complete(update), 204)
    seen: list[int] = []
    token = None
    for _ in range(10):
        query = {"continuationToken": token} if token is not None else None
        body = await body_json(await api.call("GET", f"{update.path}/events", query=query))
        seen.extend(e["sequence"] for e in body["events"])
        token = body["continuationToken"]
        if token is None:
            break
    assert seen == list(range(700))


async def test_events_of_a_preview_are_kept(api: Api, stack: str) -> None:
    preview = await api.started(stack, "preview", dry_run=True)
    await assert_ok(await api.events(preview, [stdout_event(0)]), 204)
    await assert_ok(await api.complete(preview), 204)
    body = await body_json(await api.call("GET", f"{preview.path}/events"))
    assert [e["sequence"] for e in body["events"]] == [0]


async def test_complete_releases_the_stack_and_records_results(api: Api, stack: str) -> None:
    update = await api.started(stack)
    await assert_ok(await api.checkpoint(update, untyped(4)), 204)
    await assert_ok(await api.complete(update), 204)
    view = await api.stack_json(stack)
    assert view["activeUpdate"] == ""
    assert "currentOperation" not in view
    assert view["version"] == 1
    status = await body_json(await api.status(update))
    assert status == {"status": "succeeded", "events": [], "continuationToken": None}
    [summary] = (await api.list_stacks())["stacks"]
    assert summary["resourceCount"] == 4
    # Retries of complete with the same status succeed and change nothing.
    await assert_ok(await api.complete(update), 204)
    await assert_ok(await api.complete(update), 204)
    assert (await api.stack_json(stack))["version"] == 1
    # A different final status after the fact is refused.
    response = await api.complete(update, "failed")
    assert response.status_code in (403, 409)
    await assert_error(response, response.status_code)
    assert (await body_json(await api.status(update)))["status"] == "succeeded"
    # The lease ended with the update.
    await assert_error(await api.renew(update), 403)
    await assert_error(await api.events(update, [stdout_event(9)]), 403)
    await assert_error(await api.checkpoint(update, untyped(1)), 403)


async def test_complete_failed(api: Api, stack: str) -> None:
    update = await api.started(stack)
    await assert_ok(await api.checkpoint(update, untyped(2)), 204)
    await assert_ok(await api.complete(update, "failed"), 204)
    assert (await body_json(await api.status(update)))["status"] == "failed"
    view = await api.stack_json(stack)
    assert view["activeUpdate"] == ""
    # The state written before the failure is the stack's state.
    assert len(json.loads(await api.export_bytes(stack))["deployment"]["resources"]) == 2
    [entry] = await api.history(stack)
    assert entry["result"] == "failed"


async def test_complete_with_a_bad_status_changes_nothing(api: Api, stack: str) -> None:
    update = await api.started(stack)
    for body in ({"status": "done"}, {"status": 1}, {}, {"status": None}):
        response = await api.call("POST", f"{update.path}/complete", body, lease=update.token)
        await assert_error(response, 400)
    assert (await body_json(await api.status(update)))["status"] == "running"
    assert (await api.stack_json(stack))["activeUpdate"] == update.id


async def test_cancel(api: Api, stack: str) -> None:
    update = await api.started(stack)
    await assert_ok(await api.checkpoint(update, untyped(1)), 204)
    await assert_ok(await api.cancel(update), 204)
    view = await api.stack_json(stack)
    assert view["activeUpdate"] == ""
    status = await body_json(await api.status(update))
    assert status["status"] in ("cancelled", "failed")
    assert status["continuationToken"] is None
    # Idempotent.
    await assert_ok(await api.cancel(update), 204)
    # The running CLI's lease is dead: renew gets 403 (which makes the CLI stop), and so
    # do checkpoints and events.
    await assert_error(await api.renew(update), 403)
    await assert_error(await api.checkpoint(update, untyped(2)), 403)
    await assert_error(await api.verbatim(update, b'{"version":3,"deployment":{}}', 2), 403)
    await assert_error(await api.events(update, [stdout_event(0)]), 403)
    # The stack is free again.
    fresh = await api.started(stack)
    assert fresh.version == 2
    # The state the cancelled update wrote stays.
    assert len(json.loads(await api.export_bytes(stack))["deployment"]["resources"]) == 1


async def test_cancel_a_not_started_update(api: Api, stack: str) -> None:
    update = await api.new_update(stack)
    await assert_ok(await api.cancel(update), 204)
    assert (await body_json(await api.status(update)))["status"] in ("cancelled", "failed")
    response = await api.start_update(update)
    assert 400 <= response.status_code < 500
    await assert_error(response, response.status_code)
    assert (await api.stack_json(stack))["activeUpdate"] == ""


async def test_cancel_a_completed_update_changes_nothing(api: Api, stack: str) -> None:
    update = await api.run_update(stack, untyped(1))
    await assert_ok(await api.cancel(update), 204)
    assert (await body_json(await api.status(update)))["status"] == "succeeded"


async def test_cancel_unknown_update_is_404(api: Api, stack: str) -> None:
    response = await api.call("POST", f"/api/stacks/{stack}/update/ffffffffffff/cancel")
    await assert_error(response, 404)


async def test_update_of_another_stack_is_404_through_this_stack(api: Api, stack: str) -> None:
    other = await api.new_stack(f"{DEFAULT_ORG}/proj/other")
    update = await api.started(other)
    for method, suffix in (("GET", ""), ("POST", "/cancel"), ("GET", "/events")):
        response = await api.call(method, f"/api/stacks/{stack}/update/{update.id}{suffix}")
        await assert_error(response, 404)
    assert (await body_json(await api.status(update)))["status"] == "running"


async def test_import_rename_and_delete_wait_for_a_running_update(api: Api, stack: str) -> None:
    update = await api.started(stack)
    await assert_error(await api.import_state(stack, untyped(1)), 409)
    body = {"newName": "renamed", "newProject": "proj"}
    await assert_error(await api.call("POST", f"/api/stacks/{stack}/rename", body), 409)
    response = await api.call("DELETE", f"/api/stacks/{stack}", query={"force": "false"})
    await assert_error(response, 409)
    await assert_ok(await api.complete(update), 204)
    assert await api.history(stack) != []


async def test_stack_version_grows_with_each_update(api: Api, stack: str) -> None:
    versions = []
    for i in range(3):
        update = await api.run_update(stack, untyped(i + 1))
        versions.append(update.version)
        assert (await api.stack_json(stack))["version"] == update.version
    assert versions == [1, 2, 3]


async def test_journal_entries_are_refused_cleanly(api: Api, stack: str) -> None:
    update = await api.started(stack)
    response = await api.call(
        "PATCH",
        f"{update.path}/journalentries",
        {"entries": []},
        gzip_body=True,
        lease=update.token,
    )
    assert 400 <= response.status_code < 500
    await assert_error(response, response.status_code)
    await assert_error(
        await api.call("PATCH", f"{update.path}/journalentries", {"entries": []}), 401
    )


async def test_update_routes_accept_any_kind_segment(api: Api, stack: str) -> None:
    update = await api.new_update(stack, "refresh")
    for kind in ("refresh", "preview", "destroy"):
        status = await api.call("GET", f"/api/stacks/{stack}/{kind}/{update.id}")
        assert (await body_json(status))["status"] == "not started"
    response = await api.call("POST", f"/api/stacks/{stack}/refresh/{update.id}", {})
    assert response.status_code == 200
    token = (await body_json(response))["token"]
    response = await api.call(
        "POST",
        f"/api/stacks/{stack}/refresh/{update.id}/complete",
        {"status": "succeeded"},
        lease=token,
    )
    await assert_ok(response, 204)
    [entry] = await api.history(stack)
    assert entry["kind"] == "refresh"


async def test_events_listing_rejects_a_bad_continuation_token(api: Api, stack: str) -> None:
    update = await api.started(stack)
    for token in ("abc", "-5", "1.5"):
        response = await api.call(
            "GET", f"{update.path}/events", query={"continuationToken": token}
        )
        await assert_error(response, 400)


async def test_update_token_routes_check_the_lease_before_reading_the_body(api: Api) -> None:
    """Anyone can send ``Authorization: update-token <anything>``; the body (up to
    PROCELLA_MAX_INFLATED_BYTES = 256 MiB inflated, then parsed into Python objects) is
    processed before the lease is looked at (procella section 11, item 14).

    (It answered 400, the body parsed first, instead of 403.)
    """
    await api.new_stack(S)
    update = await api.started(S)
    routes = [
        ("PATCH", "checkpoint"),
        ("PATCH", "checkpointverbatim"),
        ("PATCH", "checkpointdelta"),
        ("POST", "events/batch"),
        ("POST", "complete"),
        ("POST", "renew_lease"),
    ]
    failures = []
    for method, suffix in routes:
        response = await api.call(
            method,
            f"{update.path}/{suffix}",
            raw=b"[" * 10_000 + b"not json",
            gzip_body=True,
            lease="not-the-lease-of-this-update",
        )
        if response.status_code != 403:
            failures.append((suffix, response.status_code))
    assert failures == [], f"body processed before the lease was checked: {failures}"


async def test_a_bogus_update_token_cannot_make_the_server_inflate_a_large_body(
    api: Api,
) -> None:
    """The same, measured: 200 MiB of zeros gzip to ~200 KiB; with a made-up lease the
    server inflates all of it before answering.

    (It answered 413 after inflating, instead of a quick 403.)
    """
    await api.new_stack(S)
    update = await api.started(S)
    bomb = gzip.compress(b" " * (200 << 20), compresslevel=9)
    started = time.monotonic()
    response = await api.call(
        "PATCH",
        f"{update.path}/checkpointverbatim",
        raw=bomb,
        headers={"Content-Encoding": "gzip"},
        lease="made-up",
    )
    elapsed = time.monotonic() - started
    assert response.status_code == 403, (response.status_code, f"{elapsed:.2f}s")


async def test_creating_an_update_while_the_stack_is_being_deleted_is_404(
    app: quart_typing.TestAppProtocol, api: Api
) -> None:
    """``POST STACK/update`` resolves the stack, then inserts the update in a separate
    transaction; a ``stack rm`` committing in between makes the insert break the foreign
    key, which neither store translates.

    (It answered 500 instead of 404.)
    """
    await api.new_stack(S)
    meta = services_of(app).meta
    async with meta.transaction() as conn:
        stack = await stack_q.get(conn, DEFAULT_ORG, "proj", "dev", lock=True)
        assert stack is not None
        await stack_q.delete(conn, stack.id)  # the DELETE STACK request, not yet committed
        create = asyncio.create_task(api.create_update(S))
        await until_blocked(app)  # it waits for our lock, to read the stack under it
    await assert_error(await create, 404)


async def test_cancel_and_complete_of_one_update_do_not_deadlock(
    app: quart_typing.TestAppProtocol, api: Api
) -> None:
    """``complete`` locks the update row, then updates the stack row; ``cancel`` (and
    ``start``) lock the stack row, then the update row. When they meet, PostgreSQL
    detects a deadlock after deadlock_timeout (1 s) and aborts one: a 503.

    (On PostgreSQL one of them answered 503.) The test holds
    the update row until complete waits for it and then cancel waits too, so both meet.
    """
    await api.new_stack(S)
    update = await api.started(S)
    meta = services_of(app).meta
    async with meta.transaction() as conn:
        await conn.execute("SELECT id FROM updates WHERE id = ? FOR UPDATE", (update.id,))
        complete = asyncio.create_task(api.complete(update))
        await until_blocked(app)  # complete waits for the update row
        cancel = asyncio.create_task(api.cancel(update))
        await until_blocked(app, 2)  # and cancel waits too, behind it or for the stack row
    responses = [await complete, await cancel]
    statuses = [r.status_code for r in responses]
    assert 503 not in statuses and 500 not in statuses, statuses


async def test_a_summary_event_that_is_not_an_object_does_not_break_complete(api: Api) -> None:
    """``events/batch`` accepts any non-null ``summaryEvent``; ``complete`` then calls
    ``.get`` on it, and every retry of complete fails, so the stack stays locked until
    the lease expires.

    (Complete answered 500.)
    """
    await api.new_stack(S)
    update = await api.started(S)
    event = {"sequence": 0, "timestamp": 1, "summaryEvent": "done"}
    response = await api.events(update, [event])
    if response.status_code == 400:
        return  # refusing the event is fine
    await assert_ok(response, 204)
    await assert_ok(await api.complete(update), 204)
    assert (await api.stack_json(S))["activeUpdate"] == ""


async def test_history_stays_readable_by_the_cli_after_odd_resource_changes(api: Api) -> None:
    """``summaryEvent.resourceChanges`` is copied to the history unchecked; the CLI decodes
    it as ``map[OpType]int``, so one odd event breaks ``pulumi stack history`` for good.

    (The history served ``{"create": "3"}``.)
    """
    await api.new_stack(S)
    update = await api.started(S)
    event = {
        "sequence": 0,
        "timestamp": 1,
        "summaryEvent": {"resourceChanges": {"create": "3"}, "maybeCorrupt": False},
    }
    response = await api.events(update, [event])
    if response.status_code == 400:
        return
    await assert_ok(await api.complete(update), 204)
    for info in await api.history(S):
        for op, count in (info.get("resourceChanges") or {}).items():
            assert isinstance(count, int), (op, count)
