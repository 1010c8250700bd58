"""Review findings: each test shows one bug (it fails on the code as reviewed).

They run on both backends (``PROCELLA_TEST_BACKEND=embedded|cluster``); the docstring of
each says where it fails.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import threading
import time
from typing import Any

import pytest
from quart import typing as quart_typing

from procella.metadata.queries import stacks as stack_q
from procella.stacks import service as stack_service
from procella.strictjson import MAX_DEPTH
from tests.helpers import (
    DEFAULT_ORG,
    Api,
    assert_error,
    assert_ok,
    compact,
    expire_lease,
    until_blocked,
    untyped,
)

S = f"{DEFAULT_ORG}/proj/dev"


# 1. Rename reads the state outside its transaction --------------------------------------


async def test_rename_racing_the_end_of_an_update_keeps_its_last_checkpoint(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rename reads the state, rewrites it for the new name (outside any transaction),
    then commits. An update that starts, saves a checkpoint and completes in between must
    not be lost: the rename writing back the state it read would forget the resources
    that update created.

    The rename must either refuse (409: an update was running when it read the state,
    or the state changed before it committed) or rename the current state. The test
    holds the rename inside its rewrite until the update has ended, so the race happens
    every time.
    """
    await api.new_stack(S)
    await assert_ok(await api.import_state(S, untyped(5)), 200)
    body = {"newName": "prod", "newProject": "proj"}

    # While an update runs, the rename is refused outright.
    running = await api.started(S)
    await assert_error(await api.call("POST", f"/api/stacks/{S}/rename", body), 409)
    await assert_ok(await api.complete(running), 204)

    reading, resume = threading.Event(), threading.Event()
    rewrite = stack_service._renamed_state

    def paused(text: bytes, old: Any, new: Any) -> bytes:
        reading.set()
        resume.wait(30)
        return rewrite(text, old, new)

    monkeypatch.setattr(stack_service, "_renamed_state", paused)
    rename = asyncio.create_task(api.call("POST", f"/api/stacks/{S}/rename", body))
    try:
        assert await asyncio.to_thread(reading.wait, 10), "the rename never read the state"
        update = await api.started(S)
        final = compact(untyped(2))  # e.g. a destroy that kept two resources
        await assert_ok(await api.verbatim(update, final, 1), 204)
        await assert_ok(await api.complete(update), 204)
    finally:
        resume.set()

    response = await rename
    if response.status_code == 409:
        return  # refusing the rename is correct too
    await assert_ok(response, 204)
    exported = json.loads(await api.export_bytes(f"{DEFAULT_ORG}/proj/prod"))
    resources = exported["deployment"].get("resources", [])
    assert len(resources) == 2, (
        f"the rename brought back a stale state of {len(resources)} resources; "
        "the update's last checkpoint (2 resources) is lost"
    )


# 2. Update-token routes read (gunzip, parse) the body before checking the lease -----------


async def test_update_token_routes_check_the_lease_before_reading_the_body(api: Api) -> None:
    """Anyone can send ``Authorization: update-token <anything>``; the body (up to
    PROCELLA_MAX_INFLATED_BYTES = 256 MiB inflated, then parsed into Python objects) is
    processed before the lease is looked at (procella section 11, item 14).

    Fails on both backends: the answer is 400 (body parsed first) instead of 403.
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

    Fails on both backends: 413 after inflating (instead of a quick 403).
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


# 3. A stack deleted under a request: 500 --------------------------------------------------


async def test_creating_an_update_while_the_stack_is_being_deleted_is_404(
    app: quart_typing.TestAppProtocol, api: Api
) -> None:
    """``POST STACK/update`` resolves the stack, then inserts the update in a separate
    transaction; a ``stack rm`` committing in between makes the insert break the foreign
    key, which neither store translates.

    Fails on both backends: 500 "internal server error" instead of 404.
    """
    await api.new_stack(S)
    meta = app.app.extensions["procella"].meta
    async with meta.transaction() as conn:
        stack = await stack_q.get(conn, DEFAULT_ORG, "proj", "dev", lock=True)
        assert stack is not None
        await stack_q.delete(conn, stack.id)  # the DELETE STACK request, not yet committed
        create = asyncio.create_task(api.create_update(S))
        await until_blocked(app)  # it waits for our lock, to read the stack under it
    await assert_error(await create, 404)


async def test_a_checkpoint_racing_a_forced_stack_delete_is_404(
    app: quart_typing.TestAppProtocol, api: Api
) -> None:
    """A checkpoint authorized just before ``stack rm --force`` commits finds its update
    row gone at the compare-and-set; ``_explain_lost_race`` asserts the row exists.

    Fails on both backends: 500 (AssertionError) instead of 404.
    """
    await api.new_stack(S)
    update = await api.started(S)
    meta = app.app.extensions["procella"].meta
    async with meta.transaction() as conn:
        stack = await stack_q.get(conn, DEFAULT_ORG, "proj", "dev", lock=True)
        assert stack is not None
        # The update row is locked too, as the DELETE's cascade does on PostgreSQL.
        await conn.execute("SELECT id FROM updates WHERE id = ? FOR UPDATE", (update.id,))
        await stack_q.delete(conn, stack.id)
        save = asyncio.create_task(api.verbatim(update, compact(untyped(1)), 1))
        await until_blocked(app)  # authorized; now waiting for the update row
    await assert_error(await save, 404)


# 4. Unvalidated strings reach PostgreSQL -----------------------------------------------


async def test_a_nul_in_an_update_id_is_404_on_every_backend(api: Api) -> None:
    """The update id in the URL is never validated; PostgreSQL text cannot hold NUL and
    psycopg's DataError is not translated.

    Passes on the embedded backend, fails on cluster (500 instead of 404).
    """
    await api.new_stack(S)
    update = await api.started(S)
    bad = f"/api/stacks/{S}/update/x%00y"
    failures = []
    for method, path, lease in (
        ("GET", bad, None),
        ("POST", bad, None),
        ("POST", f"{bad}/cancel", None),
        ("GET", f"{bad}/events", None),
        ("POST", f"{bad}/complete", update.token),
        ("POST", f"{bad}/renew_lease", update.token),
    ):
        body = {"status": "succeeded"} if path.endswith("complete") else {"duration": 300}
        response = await api.call(method, path, body, lease=lease)
        if response.status_code != 404:
            failures.append((method, path, response.status_code))
    assert failures == []


async def test_a_nul_in_a_stack_list_continuation_token_is_not_500(api: Api) -> None:
    """The decoded continuation token of ``GET /api/user/stacks`` goes to SQL unchecked.

    Passes on the embedded backend, fails on cluster (500 instead of 400).
    """
    await api.new_stack(S)
    token = base64.urlsafe_b64encode(json.dumps(["a\x00", "b", "c"]).encode()).decode()
    response = await api.call("GET", "/api/user/stacks", query={"continuationToken": token})
    if response.status_code != 200:
        await assert_error(response, 400)


# 5. Inconsistent lock order ------------------------------------------------------------


async def test_cancel_and_complete_of_one_update_do_not_deadlock(
    app: quart_typing.TestAppProtocol, api: Api
) -> None:
    """``complete`` locks the update row, then updates the stack row; ``cancel`` (and
    ``start``) lock the stack row, then the update row. When they meet, PostgreSQL
    detects a deadlock after deadlock_timeout (1 s) and aborts one: a 503.

    Passes on the embedded backend (one writer), fails on cluster (503). The test holds
    the update row until complete waits for it and then cancel waits too, so both meet.
    """
    await api.new_stack(S)
    update = await api.started(S)
    meta = app.app.extensions["procella"].meta
    async with meta.transaction() as conn:
        await conn.execute("SELECT id FROM updates WHERE id = ? FOR UPDATE", (update.id,))
        complete = asyncio.create_task(api.complete(update))
        await until_blocked(app)  # complete waits for the update row
        cancel = asyncio.create_task(api.cancel(update))
        await until_blocked(app, 2)  # and cancel waits too, behind it or for the stack row
    responses = [await complete, await cancel]
    statuses = [r.status_code for r in responses]
    assert 503 not in statuses and 500 not in statuses, statuses


# 6. An abandoned update still blocks import and rename ---------------------------------


async def test_import_after_an_abandoned_update_is_not_refused(
    app: quart_typing.TestAppProtocol, api: Api
) -> None:
    """After a CLI dies mid-update its lease expires; ``start`` then takes the stack over
    (``_take_stack``) and ``stack rm`` ignores it, but import (every ``pulumi state ...``
    command) and rename still answer "Another update is currently in progress." until the
    garbage collector runs (lease grace 30 s + up to one GC interval).

    Fails on both backends: 409.
    """
    await api.new_stack(S)
    update = await api.started(S)
    await expire_lease(app, update.id)
    await assert_ok(await api.import_state(S, untyped(1)), 200)


# 7. Summary events are trusted -------------------------------------------------------


async def test_a_summary_event_that_is_not_an_object_does_not_break_complete(api: Api) -> None:
    """``events/batch`` accepts any non-null ``summaryEvent``; ``complete`` then calls
    ``.get`` on it, and every retry of complete fails, so the stack stays locked until
    the lease expires.

    Fails on both backends: complete answers 500.
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

    Fails on both backends: the history serves ``{"create": "3"}``.
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


# 8. Rename recursion is shallower than what the server accepts ------------------------


async def test_a_stack_whose_state_nests_deeply_can_still_be_renamed(api: Api) -> None:
    """Checkpoints and imports used to accept JSON nested as deep as Python's C decoder
    allowed (~990 levels); the rename rewrite (``Renamer.value``) spends two Python frames
    per level, so a state nested 600 deep could be stored but never renamed (a 500).
    Bodies now nest at most MAX_DEPTH levels, and a state that deep renames.
    """
    await api.new_stack(S)
    state = untyped(2)
    value: Any = 1
    for _ in range(600):
        value = {"v": value}
    state["deployment"]["resources"][1]["outputs"] = {"deep": value}
    await assert_error(await api.import_state(S, state), 400)
    value = 1
    for _ in range(MAX_DEPTH - 5):  # in the body, deployment, resources, resource, outputs
        value = {"v": value}
    state["deployment"]["resources"][1]["outputs"] = {"deep": value}
    await assert_ok(await api.import_state(S, state), 200)
    body = {"newName": "prod", "newProject": "proj"}
    await assert_ok(await api.call("POST", f"/api/stacks/{S}/rename", body), 204)
