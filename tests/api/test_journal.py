"""Journaling (journalVersion 1): entries stored durably and in order, replayed into state.

The entries here are shaped as the CLI sends them (pkg/backend/journal.go); the replay
rules themselves are unit-tested in tests/unit/test_journal.py against the CLI's own
replayer.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from quart import typing as quart_typing

from procella import create_app
from procella.settings import Settings
from procella.workers.gc import run_gc_once
from tests.helpers import (
    DEFAULT_ORG,
    Api,
    Update,
    assert_error,
    assert_ok,
    body_json,
    expire_lease,
    journal_entry,
    resource_state,
    services_of,
    started_app,
    untyped,
)

S = f"{DEFAULT_ORG}/proj/dev"
BEGIN, SUCCESS, FAILURE, SECRETS = 0, 1, 2, 6
STACK_URN = "urn:pulumi:dev::proj::pulumi:pulumi:Stack::proj-dev"
SECRETS_PROVIDER = {"type": "service", "state": {"owner": DEFAULT_ORG, "stack": "dev"}}


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[quart_typing.TestAppProtocol]:
    """The app once its own first GC cycle is over: tests here run the GC themselves and
    count what it collected, which a late first cycle of the app's would take first."""
    async with started_app(settings) as test_app:
        yield test_app


def stack_state() -> dict[str, Any]:
    return {"urn": STACK_URN, "custom": False, "type": "pulumi:pulumi:Stack"}


def create(sequence: int, operation: int, state: dict[str, Any]) -> list[dict[str, Any]]:
    """The begin and success entries of a create step."""
    return [
        journal_entry(
            BEGIN, sequence, operation, operation={"resource": state, "type": "creating"}
        ),
        journal_entry(SUCCESS, sequence + 1, operation, state=state),
    ]


def first_update_entries() -> list[dict[str, Any]]:
    return [
        journal_entry(SECRETS, 1, secretsProvider=SECRETS_PROVIDER),
        *create(2, 1, stack_state()),
        *create(4, 2, resource_state("a")),
        *create(6, 3, resource_state("b")),
    ]


async def journaled(api: Api, stack: str = S) -> Update:
    update = await api.new_update(stack)
    await api.begin(update, {"tags": None, "journalVersion": 1})
    assert update.start["journalVersion"] == 1
    return update


async def state_of(api: Api, stack: str, version: int | None = None) -> dict[str, Any]:
    exported: dict[str, Any] = json.loads(await api.export_bytes(stack, version))
    return exported


def urns(state: dict[str, Any]) -> list[str]:
    return [r["urn"].rsplit("::", 1)[1] for r in state["deployment"].get("resources", [])]


@pytest.fixture
async def stack(api: Api) -> str:
    await api.new_stack(S)
    return S


async def test_the_reply_says_1_only_when_the_cli_asks(api: Api, stack: str) -> None:
    update = await api.new_update(stack)
    body = await body_json(await api.start_update(update, {"tags": None}))
    assert body["journalVersion"] == 0
    # v3.276.0 asks for 2 (state-migration entries); 1 is the version Procella speaks.
    preview = await api.new_update(stack, dry_run=True)
    body = await body_json(await api.start_update(preview, {"journalVersion": 2}))
    assert body["journalVersion"] == 1


async def test_with_journaling_off_the_reply_is_0(settings: Settings) -> None:
    async with create_app(settings.replace(journaling=False)).test_app() as app:
        api = Api(app.test_client())
        await api.new_stack(S)
        update = await api.new_update(S)
        body = await body_json(await api.start_update(update, {"journalVersion": 1}))
        assert body["journalVersion"] == 0


async def test_a_journaled_update_becomes_the_stack_state(api: Api, stack: str) -> None:
    update = await journaled(api)
    await assert_ok(await api.journal(update, first_update_entries()), 204)
    # During the update, the export replays what arrived so far.
    assert urns(await state_of(api, stack)) == ["proj-dev", "a", "b"]
    await assert_ok(await api.complete(update), 204)
    state = await state_of(api, stack)
    assert urns(state) == ["proj-dev", "a", "b"]
    assert state["deployment"]["secrets_providers"] == SECRETS_PROVIDER
    assert state["deployment"].get("pending_operations") is None
    history = await api.history(stack)
    assert history[0]["resourceCount"] == 3
    listed = await api.list_all_stacks()
    assert [s["resourceCount"] for s in listed if s["stackName"] == "dev"] == [3]


async def test_the_next_update_replays_onto_the_previous_state(api: Api, stack: str) -> None:
    first = await journaled(api)
    await assert_ok(await api.journal(first, first_update_entries()), 204)
    await assert_ok(await api.complete(first), 204)
    second = await journaled(api)
    changed = resource_state("a", outputs={"name": "a", "size": 2})
    entries = [
        journal_entry(SECRETS, 1, secretsProvider=SECRETS_PROVIDER),
        journal_entry(SUCCESS, 2, 1, state=stack_state(), removeOld=0),
        journal_entry(BEGIN, 3, 2, operation={"resource": changed, "type": "updating"}),
        journal_entry(SUCCESS, 4, 2, state=changed, removeOld=1),
        journal_entry(BEGIN, 5, 3, operation={"resource": resource_state("b"), "type": "deleting"}),
        journal_entry(SUCCESS, 6, 3, removeOld=2),
    ]
    # Two batches, as the CLI sends them one after the other.
    await assert_ok(await api.journal(second, entries[:3]), 204)
    await assert_ok(await api.journal(second, entries[3:]), 204)
    await assert_ok(await api.complete(second), 204)
    state = await state_of(api, stack)
    assert urns(state) == ["proj-dev", "a"]
    assert state["deployment"]["resources"][1]["outputs"] == {"name": "a", "size": 2}
    # Each version keeps its own state.
    assert urns(await state_of(api, stack, first.version)) == ["proj-dev", "a", "b"]


async def test_a_journal_longer_than_a_page_replays_whole(api: Api, stack: str) -> None:
    # Replay reads entries a page (256) at a time: every page, in order, counts.
    update = await journaled(api)
    names = [f"r{i:03d}" for i in range(300)]
    entries = [journal_entry(SECRETS, 1, secretsProvider=SECRETS_PROVIDER)]
    entries += create(2, 1, stack_state())
    for index, name in enumerate(names):
        entries += create(4 + 2 * index, 2 + index, resource_state(name))
    # Delete the first resource at the end, so the last page refers to the first.
    entries.append(journal_entry(SUCCESS, len(entries) + 1, 2, removeNew=2))
    await assert_ok(await api.journal(update, entries), 204)
    assert urns(await state_of(api, stack)) == ["proj-dev", *names[1:]]
    await assert_ok(await api.complete(update), 204)
    assert urns(await state_of(api, stack)) == ["proj-dev", *names[1:]]
    assert (await api.history(stack))[0]["resourceCount"] == 300


async def test_unfinished_operations_are_pending_in_the_export(api: Api, stack: str) -> None:
    update = await journaled(api)
    entries = [
        journal_entry(SECRETS, 1, secretsProvider=SECRETS_PROVIDER),
        *create(2, 1, stack_state()),
        journal_entry(
            BEGIN, 4, 2, operation={"resource": resource_state("slow"), "type": "creating"}
        ),
    ]
    await assert_ok(await api.journal(update, entries), 204)
    state = await state_of(api, stack)
    assert state["deployment"]["pending_operations"] == [
        {"resource": resource_state("slow"), "type": "creating"}
    ]
    # The CLI dies; `pulumi cancel` ends the update and its state is kept as it was.
    await assert_ok(await api.cancel(update), 204)
    after = await state_of(api, stack)
    assert after["deployment"]["pending_operations"] == state["deployment"]["pending_operations"]
    assert urns(after) == ["proj-dev"]


async def test_a_retried_batch_changes_nothing(api: Api, stack: str) -> None:
    update = await journaled(api)
    entries = first_update_entries()
    await assert_ok(await api.journal(update, entries[:3]), 204)
    await assert_ok(await api.journal(update, entries[:3]), 204)
    await assert_ok(await api.journal(update, entries[3:]), 204)
    await assert_ok(await api.complete(update), 204)
    assert urns(await state_of(api, stack)) == ["proj-dev", "a", "b"]


async def test_an_entry_resent_with_other_contents_is_refused_whole(api: Api, stack: str) -> None:
    update = await journaled(api)
    entries = first_update_entries()
    await assert_ok(await api.journal(update, entries[:3]), 204)
    changed = json.loads(json.dumps(entries[2]))
    changed["state"]["outputs"] = {"name": "other"}
    message = await assert_error(await api.journal(update, [entries[3], changed]), 409)
    assert "3" in message
    # Nothing of the refused batch was stored: entry 4 is new again.
    await assert_ok(await api.journal(update, entries[3:]), 204)
    await assert_ok(await api.complete(update), 204)
    state = await state_of(api, stack)
    assert state["deployment"]["resources"][0]["urn"] == STACK_URN


async def test_a_batch_too_large_is_413_and_stores_nothing(settings: Settings) -> None:
    async with create_app(settings.replace(journal_batch_max_bytes=2048)).test_app() as app:
        api = Api(app.test_client())
        await api.new_stack(S)
        update = await journaled(api)
        big = resource_state("big", outputs={"blob": "x" * 4096})
        await assert_error(await api.journal(update, create(1, 1, big)), 413)
        await assert_ok(await api.journal(update, create(1, 1, resource_state("small"))), 204)
        await assert_ok(await api.complete(update), 204)
        assert urns(await state_of(api, S)) == ["small"]


async def test_entries_after_complete_are_refused(api: Api, stack: str) -> None:
    update = await journaled(api)
    await assert_ok(await api.journal(update, first_update_entries()), 204)
    await assert_ok(await api.complete(update), 204)
    await assert_error(await api.journal(update, create(10, 10, resource_state("late"))), 403)
    assert urns(await state_of(api, stack)) == ["proj-dev", "a", "b"]


async def test_modes_do_not_mix(api: Api, stack: str) -> None:
    update = await journaled(api)
    await assert_error(await api.checkpoint(update, untyped(2)), 400)
    plain = await api.new_update(stack, "refresh")
    other = await api.new_stack(f"{DEFAULT_ORG}/proj/other")
    assert other
    await api.cancel(update)
    await api.begin(plain)
    assert plain.start["journalVersion"] == 0
    await assert_error(await api.journal(plain, first_update_entries()), 400)
    preview = await api.new_update(stack, dry_run=True)
    await api.begin(preview, {"journalVersion": 1})
    await assert_error(await api.journal(preview, first_update_entries()), 400)


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ({"version": 2, "kind": 0, "sequenceID": 1, "operationID": 1}, "version"),
        ({"version": 1, "kind": 12, "sequenceID": 1, "operationID": 1}, "kind"),
        ({"version": 1, "kind": 0, "sequenceID": "1", "operationID": 1}, "sequenceID"),
        ({"version": 1, "kind": 1, "sequenceID": 1, "operationID": 1, "state": []}, "state"),
        ({"version": 1, "kind": 6, "sequenceID": 1, "operationID": 0}, "secretsProvider"),
        ({"version": 1, "kind": 5, "sequenceID": 1, "operationID": 0}, "newSnapshot"),
        (
            {"version": 1, "kind": 1, "sequenceID": 1, "operationID": 1, "removeOld": -1},
            "removeOld",
        ),
        ("entry", "journal entry 0"),
    ],
)
async def test_bad_entries_are_400_and_store_nothing(
    api: Api, stack: str, entry: Any, words: str
) -> None:
    update = await journaled(api)
    good = journal_entry(SECRETS, 1, secretsProvider=SECRETS_PROVIDER)
    message = await assert_error(await api.journal(update, [entry, good]), 400)
    assert words in message
    await assert_ok(await api.complete(update), 204)
    # The good entry of the refused batch was not stored either.
    assert "secrets_providers" not in (await state_of(api, stack))["deployment"]


async def test_an_abandoned_journal_is_kept_and_stored_by_the_gc(
    api: Api, stack: str, app: quart_typing.TestAppProtocol, settings: Settings
) -> None:
    update = await journaled(api)
    await assert_ok(await api.journal(update, first_update_entries()), 204)
    await expire_lease(app, update.id)
    # The next update takes over the stack and its base is the abandoned update's state.
    nxt = await journaled(api)
    assert urns(await state_of(api, stack)) == ["proj-dev", "a", "b"]
    await assert_ok(await api.complete(nxt), 204)
    assert urns(await state_of(api, stack)) == ["proj-dev", "a", "b"]
    meta = services_of(app).meta
    blobs = services_of(app).blobs
    report = await run_gc_once(meta, blobs, settings)
    assert report.pruned_journal_entries == len(first_update_entries())
    assert urns(await state_of(api, stack, update.version)) == ["proj-dev", "a", "b"]
    async with meta.read() as conn:
        left = await conn.fetchone("SELECT COUNT(*) FROM journal_entries")
    assert left is not None and left[0] == 0


async def test_the_gc_stores_an_expired_journal_before_anyone_reads_it(
    api: Api, stack: str, app: quart_typing.TestAppProtocol, settings: Settings
) -> None:
    update = await journaled(api)
    await assert_ok(await api.journal(update, first_update_entries()), 204)
    await expire_lease(app, update.id)
    meta = services_of(app).meta
    blobs = services_of(app).blobs
    report = await run_gc_once(meta, blobs, settings.replace(gc_lease_grace_seconds=0))
    assert report.settled_updates == 1
    assert report.pruned_journal_entries == len(first_update_entries())
    assert urns(await state_of(api, stack)) == ["proj-dev", "a", "b"]
    stack_body = await api.stack_json(stack)
    assert "activeUpdate" not in stack_body or not stack_body["activeUpdate"]


async def stored_bodies(app: quart_typing.TestAppProtocol, update: Update) -> list[bytes]:
    async with services_of(app).meta.read() as conn:
        rows = await conn.fetchall(
            "SELECT body FROM journal_entries WHERE update_id = ? ORDER BY position",
            (update.id,),
        )
    return [bytes(row[0]) for row in rows]


async def test_unchanged_states_are_stored_as_references_to_the_base(
    api: Api, stack: str, app: quart_typing.TestAppProtocol
) -> None:
    # A `same` step repeats the base's resource: stored, it refers to it instead, so a
    # small change to a large stack stores a small journal; the state is the same.
    first = await journaled(api)
    await assert_ok(await api.journal(first, first_update_entries()), 204)
    await assert_ok(await api.complete(first), 204)
    before = await state_of(api, stack)
    second = await journaled(api)
    a, b = before["deployment"]["resources"][1:]
    changed = {**b, "outputs": {"name": "b", "size": 2}}
    retyped = {**a, "outputs": {**a["outputs"], "size": True}}  # 1 == True, yet not the same
    entries = [
        journal_entry(SECRETS, 1, secretsProvider=SECRETS_PROVIDER),
        journal_entry(SUCCESS, 2, 1, state=stack_state(), removeOld=0),
        journal_entry(SUCCESS, 3, 2, state=a, removeOld=1),
        journal_entry(SUCCESS, 4, 3, state=changed, removeOld=2),
    ]
    await assert_ok(await api.journal(second, entries), 204)
    # A retried batch compares equal to what was stored.
    await assert_ok(await api.journal(second, entries), 204)
    stored = [json.loads(body) for body in await stored_bodies(app, second)]
    assert [body.get("procellaBaseResource") for body in stored] == [None, 0, 1, None]
    assert "state" not in stored[2] and stored[3]["state"] == changed
    during = await state_of(api, stack)
    assert during["deployment"]["resources"][1:] == [a, changed]
    await assert_ok(await api.complete(second), 204)
    after = await state_of(api, stack)
    assert after["deployment"]["resources"] == [stack_state(), a, changed]

    third = await journaled(api)
    await assert_ok(
        await api.journal(third, [journal_entry(SUCCESS, 1, 1, state=retyped, removeOld=1)]),
        204,
    )
    [kept] = [json.loads(body) for body in await stored_bodies(app, third)]
    assert kept["state"] == retyped and "procellaBaseResource" not in kept


async def test_a_change_whose_steps_finish_in_another_order_stores_only_the_change(
    api: Api, stack: str, app: quart_typing.TestAppProtocol
) -> None:
    """Replay writes resources in the order their steps finished: the CLI's `same` steps
    finish in any order, so the rebuilt state lists the base's resources moved about. It
    is stored as ranges of the base, not as edits that repeat every moved resource."""
    first = await journaled(api)
    names = [f"r{i:03d}" for i in range(200)]
    entries = [journal_entry(SECRETS, 1, secretsProvider=SECRETS_PROVIDER)]
    for i, name in enumerate(names):
        entries += create(2 + 2 * i, 1 + i, resource_state(name, outputs={"pad": "x" * 2000}))
    await assert_ok(await api.journal(first, entries), 204)
    await assert_ok(await api.complete(first), 204)
    base = (await state_of(api, stack))["deployment"]["resources"]

    second = await journaled(api)
    order = list(reversed(range(len(base))))
    changed = {**base[50], "outputs": {"pad": "y" * 2000}}
    steps = [
        journal_entry(SUCCESS, 1 + n, 1 + n, state=changed if i == 50 else base[i], removeOld=i)
        for n, i in enumerate(order)
    ]
    await assert_ok(await api.journal(second, steps), 204)
    await assert_ok(await api.complete(second), 204)
    after = (await state_of(api, stack))["deployment"]["resources"]
    assert after == [changed if i == 50 else base[i] for i in order]
    async with services_of(app).meta.read() as conn:
        row = await conn.fetchone(
            "SELECT SUM(LENGTH(edits)) FROM checkpoint_deltas WHERE version = ?",
            (second.version,),
        )
    assert row is not None
    # The state is about 420 KB; the delta: the changed resource, the last one (the only
    # one without a comma after it), the manifest, and 16 bytes for each moved range.
    assert 2000 < int(row[0]) < 3 * 2200 + 200 * 16


async def test_a_full_text_is_stored_again_after_eight_small_deltas(
    api: Api, stack: str, app: quart_typing.TestAppProtocol
) -> None:
    """However small each update's delta, a reader that does not hold the text rebuilds it
    through at most eight of them."""
    first = await journaled(api)
    await assert_ok(await api.journal(first, first_update_entries()), 204)
    await assert_ok(await api.complete(first), 204)
    for size in range(2, 13):
        old = urns(await state_of(api, stack)).index("a")
        update = await journaled(api)
        changed = resource_state("a", outputs={"name": "a", "size": size})
        entry = journal_entry(SUCCESS, 1, 1, state=changed, removeOld=old)
        await assert_ok(await api.journal(update, [entry]), 204)
        await assert_ok(await api.complete(update), 204)
    async with services_of(app).meta.read() as conn:
        rows = await conn.fetchall("SELECT version, base_version FROM checkpoints ORDER BY version")
    bases = {int(version): base for version, base in rows}
    assert [v for v, base in bases.items() if base is None] == [1, 10]  # stored whole

    def links(version: int) -> int:
        base = bases[version]
        return 0 if base is None else 1 + links(int(base))

    assert max(links(v) for v in bases) == 8
    for version in (9, 12):
        resources = (await state_of(api, stack, version))["deployment"]["resources"]
        [a] = [r for r in resources if r["urn"].endswith("::a")]
        assert a["outputs"]["size"] == version


async def test_a_client_cannot_send_a_base_reference(api: Api, stack: str) -> None:
    update = await journaled(api)
    entry = journal_entry(SUCCESS, 1, 1, removeOld=0, procellaBaseResource=0)
    message = await assert_error(await api.journal(update, [entry]), 400)
    assert "procellaBaseResource" in message


async def test_a_journal_the_cli_could_not_replay_either_is_a_409(api: Api, stack: str) -> None:
    # Two resources claiming one alias: Go's replayer refuses the state, and so does the
    # export; the stack's state is not replaced by anything.
    update = await journaled(api)
    alias = "urn:pulumi:dev::proj::pulumi-python:dynamic:Resource::old"
    entries = [
        journal_entry(SECRETS, 1, secretsProvider=SECRETS_PROVIDER),
        *create(2, 1, resource_state("a", aliases=[alias])),
        *create(4, 2, resource_state("b", aliases=[alias])),
    ]
    await assert_ok(await api.journal(update, entries), 204)
    message = await assert_error(await api.export(stack), 409)
    assert "cannot be replayed" in message and "have the same alias" in message
    await assert_error(await api.complete(update), 409)
    await assert_ok(await api.cancel(update), 204)
    assert urns(await state_of(api, stack, update.version - 1)) == []


async def test_a_failed_settle_is_done_by_the_next_reader_that_needs_it(
    api: Api, stack: str, app: quart_typing.TestAppProtocol, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`pulumi cancel` stores the journal's state best effort. When that fails the cancel
    still succeeds, and what needs the stored state (here `pulumi stack rm`, which must see
    the resources) stores it first: the stack is not deleted with resources in it."""
    states = services_of(app).stacks.states
    update = await journaled(api)
    await assert_ok(await api.journal(update, first_update_entries()), 204)
    real = states.materialize

    async def failing(*_: Any) -> Any:
        raise OSError("the blob store is down")

    monkeypatch.setattr(states, "materialize", failing)
    await assert_ok(await api.cancel(update), 204)
    async with services_of(app).meta.read() as conn:
        rows = await conn.fetchone("SELECT COUNT(*) FROM checkpoints")
    assert rows is not None and rows[0] == 0
    monkeypatch.setattr(states, "materialize", real)
    message = await assert_error(await api.call("DELETE", f"/api/stacks/{stack}"), 400)
    assert "still contains resources" in message
    assert urns(await state_of(api, stack)) == ["proj-dev", "a", "b"]
    assert (await api.history(stack))[0]["resourceCount"] == 3
