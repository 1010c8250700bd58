"""Checkpoints: full, verbatim (byte-exact) and delta, sequence numbers and retries."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest
from quart import typing as quart_typing

from procella.metadata.queries import stacks as stack_q
from procella.settings import Settings
from procella_testing import servers
from tests.helpers import (
    DEFAULT_ORG,
    Api,
    Update,
    assert_error,
    assert_ok,
    body_json,
    compact,
    delta_between,
    services_of,
    sha256_hex,
    text_edit,
    until_blocked,
    untyped,
)

S = f"{DEFAULT_ORG}/proj/dev"


def cli_text(resources: int, extra: str = "") -> bytes:
    """A wrapper as the CLI writes it for delta mode: compact, HTML-escaped, non-ASCII."""
    state = untyped(resources)
    for r in state["deployment"].get("resources", []):
        r.setdefault("outputs", {})["note"] = f"caf\u00e9 \u20ac <tag> & {extra}"
    text = json.dumps(state, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode()


@pytest.fixture
async def update(api: Api) -> Update:
    await api.new_stack(S)
    return await api.started(S)


async def test_full_checkpoint_keeps_the_deployment_bytes(api: Api, update: Update) -> None:
    deployment = (
        b'{ "manifest" : {"time":"2024-01-01T00:00:00Z","magic":"","version":"v3"},\n'
        b'  "resources": [ {"urn":"urn:pulumi:dev::p::a:b:C::x","type":"a:b:C","custom":true,'
        b'"outputs":{"z":1,"a":"\\u003c\xc3\xa9"}} ] }'
    )
    raw = b'{"isInvalid":false,"version":3,"deployment":' + deployment + b"}"
    response = await api.call(
        "PATCH", f"{update.path}/checkpoint", raw=raw, gzip_body=True, lease=update.token
    )
    await assert_ok(response, 204)
    assert await api.export_bytes(S) == b'{"version":3,"deployment":' + deployment + b"}"
    # A retry of the same body changes nothing.
    await assert_ok(
        await api.call(
            "PATCH", f"{update.path}/checkpoint", raw=raw, gzip_body=True, lease=update.token
        ),
        204,
    )
    await assert_ok(await api.complete(update), 204)
    assert json.loads(await api.export_bytes(S, 1))["deployment"]["resources"][0]["outputs"] == {
        "z": 1,
        "a": "<\u00e9",
    }
    [summary] = (await api.list_stacks())["stacks"]
    assert summary["resourceCount"] == 1


async def test_full_checkpoint_v4_with_features(api: Api, update: Update) -> None:
    state = {"version": 4, "features": ["refreshBeforeUpdate", "views"], **untyped(1)}
    state["version"] = 4
    await assert_ok(await api.checkpoint(update, state), 204)
    exported = json.loads(await api.export_bytes(S))
    assert exported["version"] == 4
    assert exported["features"] == ["refreshBeforeUpdate", "views"]


async def test_full_checkpoints_replace_each_other(api: Api, update: Update) -> None:
    for n in (1, 3, 2):
        await assert_ok(await api.checkpoint(update, untyped(n)), 204)
    await assert_ok(await api.complete(update), 204)
    assert len(json.loads(await api.export_bytes(S))["deployment"]["resources"]) == 2
    assert (await api.list_stacks())["stacks"][0]["resourceCount"] == 2


async def test_bad_full_checkpoints_change_nothing(api: Api, update: Update) -> None:
    await assert_ok(await api.checkpoint(update, untyped(1)), 204)
    before = await api.export_bytes(S)
    path = f"{update.path}/checkpoint"
    body: Any
    for body in (
        {"isInvalid": True, "version": 3, "deployment": {}},
        {"version": 3, "deployment": []},
        {"version": 3},
        {"version": 7, "deployment": {}},
        {"version": "3", "deployment": {}},
        {"version": 3.0, "deployment": {}},
        {"version": True, "deployment": {}},
        {"version": 3, "features": ["views"], "deployment": {}},
        {"version": 4, "features": ["nope"], "deployment": {}},
        {"version": 4, "features": "views", "deployment": {}},
        [],
    ):
        response = await api.call("PATCH", path, body, gzip_body=True, lease=update.token)
        await assert_error(response, 400)
    assert await api.export_bytes(S) == before


async def test_verbatim_is_stored_byte_exact(api: Api, update: Update) -> None:
    text = (
        b'{"version":3,"deployment":{"manifest":{"time":"t","magic":"","version":""},'
        b'"secrets_providers":{"type":"service","state":{"url":"u"}},  "resources" : '
        b'[{"urn":"u\\u0026","type":"t","outputs":{"b":2,"a":"\xe2\x82\xac"}}],"metadata":{}}}'
    )
    await assert_ok(await api.verbatim(update, text, 1), 204)
    assert await api.export_bytes(S) == text
    await assert_ok(await api.complete(update), 204)
    assert await api.export_bytes(S, update.version) == text
    assert (await api.list_stacks())["stacks"][0]["resourceCount"] == 1


async def test_verbatim_sequence_numbers(api: Api, update: Update) -> None:
    one, two, three = cli_text(1), cli_text(2), cli_text(3)
    await assert_ok(await api.verbatim(update, one, 1), 204)
    # A retry (same number, same bytes) is a no-op success.
    await assert_ok(await api.verbatim(update, one, 1), 204)
    # The same number with other bytes is a conflict.
    await assert_error(await api.verbatim(update, two, 1), 409)
    # A gap is a conflict.
    await assert_error(await api.verbatim(update, two, 3), 409)
    assert await api.export_bytes(S) == one
    await assert_ok(await api.verbatim(update, two, 2), 204)
    # A stale number is refused, even with bytes it once carried.
    await assert_error(await api.verbatim(update, one, 1), 409)
    await assert_ok(await api.verbatim(update, three, 3), 204)
    await assert_ok(await api.verbatim(update, three, 3), 204)
    assert await api.export_bytes(S) == three


async def test_verbatim_sequence_starts_at_one(api: Api, update: Update) -> None:
    await assert_error(await api.verbatim(update, cli_text(1), 0), 400)
    await assert_error(await api.verbatim(update, cli_text(1), -1), 400)
    await assert_error(await api.verbatim(update, cli_text(1), 2), 409)
    state = json.loads(await api.export_bytes(S))
    assert "resources" not in state["deployment"]


async def test_bad_verbatim_bodies_change_nothing(api: Api, update: Update) -> None:
    await assert_ok(await api.verbatim(update, cli_text(1), 1), 204)
    before = await api.export_bytes(S)
    path = f"{update.path}/checkpointverbatim"
    good = cli_text(2)
    for raw in (
        b'{"version":4,"untypedDeployment":' + good + b',"sequenceNumber":2}',  # mismatch
        b'{"version":3,"untypedDeployment":' + good + b',"sequenceNumber":"2"}',
        b'{"version":3,"untypedDeployment":' + good + b',"sequenceNumber":2.0}',
        b'{"version":3,"untypedDeployment":' + good + b',"sequenceNumber":true}',
        b'{"version":3,"untypedDeployment":' + good + b"}",
        b'{"version":3,"untypedDeployment":"text","sequenceNumber":2}',
        b'{"version":3,"untypedDeployment":{"version":3},"sequenceNumber":2}',
        b'{"version":3,"untypedDeployment":{"version":9,"deployment":{}},"sequenceNumber":2}',
        b'{"untypedDeployment":' + good + b',"sequenceNumber":2}',
        b'{"version":3,"untypedDeployment":' + good + b',"sequenceNumber":2} trailing',
        b'{"version":3,"untypedDeployment":' + good + b',"sequenceNumber":2,}',
        b'{"version":3,"untypedDeployment":' + good[:-1] + b',"sequenceNumber":2}',
    ):
        response = await api.call("PATCH", path, raw=raw, gzip_body=True, lease=update.token)
        await assert_error(response, 400)
    assert await api.export_bytes(S) == before
    # The next number is still 2.
    await assert_ok(await api.verbatim(update, good, 2), 204)


async def test_delta_checkpoints_apply_byte_offsets(api: Api, update: Update) -> None:
    one = cli_text(3, "first")
    await assert_ok(await api.verbatim(update, one, 1), 204)
    two = cli_text(3, "second \u00fc")
    edits = delta_between(one, two)
    start = edits[0]["Span"]["start"]["offset"]
    assert len(one[:start].decode()) < start  # non-ASCII before the edit: bytes, not chars
    await assert_ok(await api.delta(update, edits, sha256_hex(two), 2), 204)
    assert await api.export_bytes(S) == two
    # Several edits in one delta, after non-ASCII text (offsets are bytes, not characters).
    three = two.replace(b"second", b"third!", 1).replace(b"id-2", b"id-Z", 1)
    first_at = two.index(b"second")
    second_at = two.index(b"id-2")
    assert second_at > first_at
    multi = [
        text_edit(first_at, first_at + len(b"second"), "third!"),
        text_edit(second_at, second_at + len(b"id-2"), "id-Z"),
    ]
    await assert_ok(await api.delta(update, multi, sha256_hex(three), 3), 204)
    assert await api.export_bytes(S) == three
    # A retry of the same delta is a no-op success.
    await assert_ok(await api.delta(update, multi, sha256_hex(three), 3), 204)
    assert await api.export_bytes(S) == three
    # Inserting and deleting whole resources (growing and shrinking the text).
    four = cli_text(5, "fourth")
    await assert_ok(await api.delta(update, delta_between(three, four), sha256_hex(four), 4), 204)
    five = cli_text(2, "fifth")
    await assert_ok(await api.delta(update, delta_between(four, five), sha256_hex(five), 5), 204)
    assert await api.export_bytes(S) == five
    await assert_ok(await api.complete(update), 204)
    assert await api.export_bytes(S) == five
    assert (await api.list_stacks())["stacks"][0]["resourceCount"] == 2


async def test_delta_with_an_empty_edit_list(api: Api, update: Update) -> None:
    one = cli_text(1)
    await assert_ok(await api.verbatim(update, one, 1), 204)
    await assert_ok(await api.delta(update, [], sha256_hex(one), 2), 204)
    await assert_ok(await api.verbatim(update, cli_text(2), 3), 204)


async def test_bad_deltas_are_refused_and_a_verbatim_retry_succeeds(
    api: Api, update: Update
) -> None:
    one = cli_text(2, "one")
    await assert_ok(await api.verbatim(update, one, 1), 204)
    two = cli_text(2, "two")
    good = delta_between(one, two)
    start = good[0]["Span"]["start"]["offset"]
    end = good[0]["Span"]["end"]["offset"]
    cases = [
        # wrong hash
        (good, sha256_hex(two + b" "), 400),
        # span past the end
        ([text_edit(len(one) - 1, len(one) + 5, "x")], sha256_hex(two), 400),
        # start after end
        ([text_edit(end, start, "x")], sha256_hex(two), 400),
        # negative offset
        ([text_edit(-1, 3, "x")], sha256_hex(two), 400),
        # overlapping spans
        ([text_edit(0, 10, "a"), text_edit(5, 12, "b")], sha256_hex(two), 400),
    ]
    for edits, digest, status in cases:
        await assert_error(await api.delta(update, edits, digest, 2), status)
        assert await api.export_bytes(S) == one
    # Malformed delta bodies.
    path = f"{update.path}/checkpointdelta"
    for body in (
        {"version": 3, "checkpointHash": "abc", "sequenceNumber": 2, "deploymentDelta": good},
        {
            "version": 3,
            "checkpointHash": sha256_hex(two).upper(),
            "sequenceNumber": 2,
            "deploymentDelta": good,
        },
        {
            "version": 3,
            "checkpointHash": sha256_hex(two),
            "sequenceNumber": 2,
            "deploymentDelta": {"x": 1},
        },
        {
            "version": 3,
            "checkpointHash": sha256_hex(two),
            "sequenceNumber": 2,
            "deploymentDelta": [{"Span": {}, "NewText": "x"}],
        },
        {
            "version": 3,
            "checkpointHash": sha256_hex(two),
            "sequenceNumber": 2,
            "deploymentDelta": [text_edit(True, 3, "x")],
        },
        {
            "version": 3,
            "checkpointHash": sha256_hex(two),
            "sequenceNumber": 2,
            "deploymentDelta": [{**good[0], "NewText": 5}],
        },
        {"version": 3, "checkpointHash": sha256_hex(two), "deploymentDelta": good},
        {
            "version": 9,
            "checkpointHash": sha256_hex(two),
            "sequenceNumber": 2,
            "deploymentDelta": good,
        },
    ):
        response = await api.call("PATCH", path, body, gzip_body=True, lease=update.token)
        await assert_error(response, 400)
        assert await api.export_bytes(S) == one
    # What the CLI does after any failed delta: the same step, verbatim, same number.
    await assert_ok(await api.verbatim(update, two, 2), 204)
    assert await api.export_bytes(S) == two


async def test_delta_sequence_numbers(api: Api, update: Update) -> None:
    one = cli_text(1, "a")
    await assert_ok(await api.verbatim(update, one, 1), 204)
    two = cli_text(1, "b")
    edits = delta_between(one, two)
    await assert_error(await api.delta(update, edits, sha256_hex(two), 3), 409)  # gap
    await assert_error(await api.delta(update, edits, sha256_hex(two), 1), 409)  # replay, other
    assert await api.export_bytes(S) == one
    await assert_ok(await api.delta(update, edits, sha256_hex(two), 2), 204)
    assert await api.export_bytes(S) == two


async def test_delta_without_a_base_in_this_update(api: Api, update: Update) -> None:
    one = cli_text(1)
    edits = [text_edit(0, 0, one.decode())]
    response = await api.delta(update, edits, sha256_hex(one), 1)
    assert response.status_code in (400, 409)
    await assert_error(response, response.status_code)
    # A base from an earlier update does not count: each update starts with a verbatim.
    await assert_ok(await api.verbatim(update, one, 1), 204)
    await assert_ok(await api.complete(update), 204)
    nxt = await api.started(S)
    two = cli_text(2)
    response = await api.delta(nxt, delta_between(one, two), sha256_hex(two), 1)
    assert response.status_code in (400, 409)
    await assert_error(response, response.status_code)
    assert await api.export_bytes(S) == one
    await assert_ok(await api.verbatim(nxt, two, 1), 204)


async def test_an_update_that_ends_on_a_text_not_json_cannot_complete(
    api: Api, update: Update
) -> None:
    """A step's text is hash-checked, not parsed (parsing a large state at every step was
    most of the server's work); the final text is parsed once, at complete, which refuses
    to record a state that is not a deployment. Only a client that hashed a broken text
    itself gets there, and a good step after it repairs the update."""
    one = cli_text(1)
    await assert_ok(await api.verbatim(update, one, 1), 204)
    broken = one[:-1]  # the closing brace removed: not JSON any more
    response = await api.delta(
        update, [text_edit(len(one) - 1, len(one), "")], sha256_hex(broken), 2
    )
    await assert_ok(response, 204)
    message = await assert_error(await api.complete(update), 400)
    assert "not a deployment" in message
    await assert_ok(await api.verbatim(update, one, 3), 204)
    await assert_ok(await api.complete(update), 204)
    assert await api.export_bytes(S) == one


async def test_an_update_that_ends_on_a_number_go_cannot_read_cannot_complete(
    api: Api, update: Update
) -> None:
    """The final text is parsed strictly: 1e400 would be stored and exported as Infinity."""
    one = cli_text(1)
    await assert_ok(await api.verbatim(update, one, 1), 204)
    at = one.index(b'"version":3') + len(b'"version":')
    broken = one[:at] + b"1e400" + one[at + 1 :]
    response = await api.delta(update, [text_edit(at, at + 1, "1e400")], sha256_hex(broken), 2)
    await assert_ok(response, 204)
    message = await assert_error(await api.complete(update), 400)
    assert "out of range" in message


@pytest.mark.parametrize("route", ["checkpoint", "checkpointverbatim", "checkpointdelta"])
async def test_previews_have_no_checkpoints(api: Api, route: str) -> None:
    await api.new_stack(S)
    await api.run_update(S, untyped(1))
    before = await api.export_bytes(S)
    for kind, dry_run in (("preview", True), ("update", True)):
        preview = await api.started(S, kind, dry_run=dry_run)
        text = cli_text(2)
        if route == "checkpoint":
            response = await api.checkpoint(preview, untyped(2))
        elif route == "checkpointverbatim":
            response = await api.verbatim(preview, text, 1)
        else:
            response = await api.delta(preview, [text_edit(0, 0, "")], sha256_hex(before), 1)
        await assert_error(response, 400)
        await assert_ok(await api.complete(preview), 204)
    assert await api.export_bytes(S) == before
    assert (await api.stack_json(S))["version"] == 1


async def test_cancelled_update_keeps_its_resources_counted(api: Api, update: Update) -> None:
    """A CLI killed mid-update, then `pulumi cancel`: the resources it created are in the
    state, so `stack rm` without --force must still refuse, and `stack ls` count them."""
    await assert_ok(await api.checkpoint(update, untyped(3)), 204)
    await assert_ok(await api.cancel(update), 204)
    assert len(json.loads(await api.export_bytes(S))["deployment"]["resources"]) == 3
    assert (await api.list_stacks())["stacks"][0]["resourceCount"] == 3
    response = await api.call("DELETE", f"/api/stacks/{S}", query={"force": "false"})
    assert await assert_error(response, 400) == "Bad Request: Stack still contains resources."


async def test_full_checkpoint_retry_after_complete_is_refused(api: Api, update: Update) -> None:
    await assert_ok(await api.checkpoint(update, untyped(1)), 204)
    await assert_ok(await api.complete(update), 204)
    await assert_error(await api.checkpoint(update, untyped(2)), 403)
    assert len(json.loads(await api.export_bytes(S))["deployment"]["resources"]) == 1
    assert (await body_json(await api.status(update)))["status"] == "succeeded"


async def test_concurrent_writes_of_one_sequence_number(api: Api, update: Update) -> None:
    """Two replicas receiving the same step: the same bytes both succeed; different bytes
    for one number let exactly one win, and the state is the winner's."""
    one = cli_text(1, "same")
    results = await asyncio.gather(*(api.verbatim(update, one, 1) for _ in range(4)))
    assert [r.status_code for r in results] == [204] * 4
    texts = [cli_text(2, f"writer {i}") for i in range(4)]
    results = await asyncio.gather(*(api.verbatim(update, t, 2) for t in texts))
    statuses = [r.status_code for r in results]
    assert sorted(statuses) == [204, 409, 409, 409]
    winner = texts[statuses.index(204)]
    assert await api.export_bytes(S) == winner
    three = cli_text(3)
    response = await api.delta(update, delta_between(winner, three), sha256_hex(three), 3)
    await assert_ok(response, 204)


async def test_identical_text_in_a_new_update_is_its_delta_base(api: Api, update: Update) -> None:
    """An update that writes exactly the previous state must not be deduplicated away:
    its next delta is computed against that text."""
    one = cli_text(2)
    await assert_ok(await api.verbatim(update, one, 1), 204)
    await assert_ok(await api.complete(update), 204)
    nxt = await api.started(S)
    await assert_ok(await api.verbatim(nxt, one, 1), 204)
    two = cli_text(3)
    await assert_ok(await api.delta(nxt, delta_between(one, two), sha256_hex(two), 2), 204)
    await assert_ok(await api.complete(nxt), 204)
    assert await api.export_bytes(S, nxt.version) == two
    assert await api.export_bytes(S, update.version) == one


@contextlib.contextmanager
def failing_checkpoint_writes(settings: Settings, stack_id: str) -> Iterator[None]:
    """Make checkpoint steps fail for real: a trigger refusing their rows (a step stores
    its delta), raising a serialization failure on PostgreSQL and an abort on SQLite."""
    if settings.uses_postgres:
        servers.install_failing_trigger(settings.database_url, "checkpoint_deltas", "40001")
        try:
            yield
        finally:
            servers.remove_failing_trigger(settings.database_url, "checkpoint_deltas")
        return
    path = settings.resolved_database_url.removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute(
            "CREATE TRIGGER fail_once BEFORE INSERT ON checkpoint_deltas "
            "BEGIN SELECT RAISE(ABORT, 'injected'); END"
        )
        db.commit()
    try:
        yield
    finally:
        with contextlib.closing(sqlite3.connect(path)) as db:
            db.execute("DROP TRIGGER fail_once")
            db.commit()


async def test_a_failed_write_is_stored_by_the_retry(settings, custom_app) -> None:
    """The CLI retries a 5xx with identical bytes and the same sequence number; a write
    that failed must not be mistaken for one already stored (the TypeScript peer's bug)."""
    async with custom_app(checkpoint_inline_max_bytes=0) as (_, api):
        await api.new_stack(S)
        stack_id = (await api.stack_json(S))["id"]
        update = await api.started(S)
        one, two = cli_text(1, "one"), cli_text(1, "two")
        await assert_ok(await api.verbatim(update, one, 1), 204)
        with failing_checkpoint_writes(settings, stack_id):
            for send in (
                lambda: api.verbatim(update, two, 2),
                lambda: api.delta(update, delta_between(one, two), sha256_hex(two), 2),
            ):
                response = await send()
                assert 500 <= response.status_code < 600
                await assert_error(response, response.status_code)
                assert await api.export_bytes(S) == one
        # The retry, byte for byte, now stores the step.
        await assert_ok(await api.delta(update, delta_between(one, two), sha256_hex(two), 2), 204)
        assert await api.export_bytes(S) == two
        three = cli_text(1, "three")
        await assert_ok(await api.verbatim(update, three, 3), 204)
        await assert_ok(await api.complete(update), 204)
        assert await api.export_bytes(S) == three


async def test_delta_new_text_that_is_not_unicode_is_400(api: Api, update: Update) -> None:
    one = cli_text(1)
    await assert_ok(await api.verbatim(update, one, 1), 204)
    # NewText "\ud800": a lone surrogate, valid JSON escape, not encodable text.
    edit = text_edit(len(one) - 2, len(one) - 1, "")
    edit["NewText"] = "\ud800"
    response = await api.delta(update, [edit], sha256_hex(one), 2)
    await assert_error(response, 400)
    assert await api.export_bytes(S) == one
    await assert_ok(await api.verbatim(update, cli_text(2), 2), 204)


# Whole checkpoints are checked in pieces: a step parses the resources it changed --------


def _with_output(text: bytes, index: int, raw: bytes) -> bytes:
    """``text`` (a cli_text) with resource ``index``'s ``value`` output spliced in raw."""
    state = json.loads(text)
    state["deployment"]["resources"][index]["outputs"]["value"] = 987654321
    out = json.dumps(state, separators=(",", ":"), ensure_ascii=False).encode()
    return out.replace(b"987654321", raw, 1)


BAD_VALUES = [
    b"NaN",
    b"-Infinity",
    b"1e400",
    b"9" * 400,
    b"[1,]",
    b'"\xff"',
    b"[" * 300 + b"]" * 300,
]


@pytest.mark.parametrize("raw", BAD_VALUES)
async def test_a_bad_changed_resource_in_a_later_verbatim_step_is_400(
    api: Api, update: Update, raw: bytes
) -> None:
    """The first step is checked whole, later ones in pieces (only what changed): what the
    whole parse refuses, the pieces refuse, and nothing is stored."""
    one = cli_text(30)
    two = _with_output(one, 10, b'"fine"')
    await assert_ok(await api.verbatim(update, one, 1), 204)
    await assert_ok(await api.verbatim(update, two, 2), 204)
    bad = _with_output(two, 20, raw)
    await assert_error(await api.verbatim(update, bad, 3), 400)
    assert await api.export_bytes(S) == two
    three = _with_output(two, 20, b'"also fine"')
    await assert_ok(await api.verbatim(update, three, 3), 204)
    await assert_ok(await api.complete(update), 204)
    assert await api.export_bytes(S) == three


@pytest.mark.parametrize("raw", BAD_VALUES)
async def test_a_bad_changed_resource_in_a_later_full_step_is_400(
    api: Api, update: Update, raw: bytes
) -> None:
    one = cli_text(30)
    two = _with_output(one, 10, b'"fine"')
    path = f"{update.path}/checkpoint"

    def body(text: bytes) -> bytes:
        inner = text[text.index(b'"deployment":') + len(b'"deployment":') : -1]
        return b'{"isInvalid":false,"version":3,"deployment":' + inner + b"}"

    for text in (one, two):
        await assert_ok(
            await api.call("PATCH", path, raw=body(text), gzip_body=True, lease=update.token), 204
        )
    bad = _with_output(two, 20, raw)
    response = await api.call("PATCH", path, raw=body(bad), gzip_body=True, lease=update.token)
    await assert_error(response, 400)
    assert await api.export_bytes(S) == two


async def test_a_state_at_the_depth_limit_passes_in_pieces_and_one_more_level_does_not(
    api: Api, update: Update
) -> None:
    """The body holds the verbatim text one level down: the text may nest MAX_DEPTH - 1
    deep; a resource sits at level 5 (body, wrapper, deployment, array, resource, outputs
    is 6 for its values)."""
    one = cli_text(5)
    await assert_ok(await api.verbatim(update, one, 1), 204)
    levels = 256 - 1 - 5
    fits = _with_output(one, 2, b"[" * levels + b"]" * levels)
    await assert_ok(await api.verbatim(update, fits, 2), 204)
    deeper = _with_output(one, 2, b"[" * (levels + 1) + b"]" * (levels + 1))
    await assert_error(await api.verbatim(update, deeper, 3), 400)
    # The deep resource unchanged, another one changed: still accepted.
    again = _with_output(fits, 3, b'"x"')
    await assert_ok(await api.verbatim(update, again, 3), 204)
    assert await api.export_bytes(S) == again


async def test_a_body_the_fast_reading_misreads_is_read_whole(api: Api, update: Update) -> None:
    """A body that ends like the CLI's but has a member after the deployment: the fast
    reading takes too much as the deployment, which does not parse; the whole parse then
    finds the real one."""
    deployment = compact(untyped(3)["deployment"])
    raw = b'{"isInvalid":false,"version":3,"deployment":' + deployment + b',"extra":{}}'
    response = await api.call(
        "PATCH", f"{update.path}/checkpoint", raw=raw, gzip_body=True, lease=update.token
    )
    await assert_ok(response, 204)
    assert await api.export_bytes(S) == b'{"version":3,"deployment":' + deployment + b"}"


async def test_a_duplicate_deployment_member_keeps_the_last_as_before(
    api: Api, update: Update
) -> None:
    first, last = compact(untyped(1)["deployment"]), compact(untyped(2)["deployment"])
    raw = b'{"version":3,"deployment":' + first + b',"deployment":' + last + b"}"
    response = await api.call(
        "PATCH", f"{update.path}/checkpoint", raw=raw, gzip_body=True, lease=update.token
    )
    await assert_ok(response, 204)
    assert await api.export_bytes(S) == b'{"version":3,"deployment":' + last + b"}"


async def test_verbatim_whose_skeleton_is_no_deployment_is_400(api: Api, update: Update) -> None:
    one = cli_text(5)
    await assert_ok(await api.verbatim(update, one, 1), 204)
    for bad in (
        one.replace(b'{"version":3,', b'{"version":9,', 1),
        one.replace(b'{"version":3,', b'{"version":3,"features":["nope"],', 1),
        one.replace(b'{"version":3,"deployment":{', b'{"version":3,"deployment":[{', 1)[:-1]
        + b"]}",
    ):
        await assert_error(await api.verbatim(update, bad, 2), 400)
    assert await api.export_bytes(S) == one


async def test_an_out_of_turn_verbatim_that_is_no_deployment_is_400_before_409(
    api: Api, update: Update
) -> None:
    """As when the text was parsed before the sequence number was looked at."""
    await assert_ok(await api.verbatim(update, cli_text(1), 1), 204)
    bad = cli_text(2).replace(b'{"version":3,', b'{"version":9,', 1)
    await assert_error(await api.verbatim(update, bad, 5, version=9), 400)
    await assert_error(await api.verbatim(update, cli_text(2), 5), 409)


async def test_a_checkpoint_racing_a_forced_stack_delete_is_404(
    app: quart_typing.TestAppProtocol, api: Api
) -> None:
    """A checkpoint authorized just before ``stack rm --force`` commits finds its update
    row gone at the compare-and-set; ``_explain_lost_race`` asserts the row exists.

    (It answered 500, an AssertionError, instead of 404.)
    """
    await api.new_stack(S)
    update = await api.started(S)
    meta = services_of(app).meta
    async with meta.transaction() as conn:
        stack = await stack_q.get(conn, DEFAULT_ORG, "proj", "dev", lock=True)
        assert stack is not None
        # The update row is locked too, as the DELETE's cascade does on PostgreSQL.
        await conn.execute("SELECT id FROM updates WHERE id = ? FOR UPDATE", (update.id,))
        await stack_q.delete(conn, stack.id)
        save = asyncio.create_task(api.verbatim(update, compact(untyped(1)), 1))
        await until_blocked(app)  # authorized; now waiting for the update row
    await assert_error(await save, 404)
