"""Bad input: every malformed request gets a clear 4xx JSON error and changes nothing."""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any
from urllib.parse import unquote

import pytest

from procella.strictjson import MAX_DEPTH
from tests.helpers import (
    DEFAULT_ORG,
    Api,
    Update,
    assert_error,
    assert_ok,
    body_json,
    compact,
    gz,
    journal_entry,
    resource_state,
    stdout_event,
    strict_json,
    untyped,
)

S = f"{DEFAULT_ORG}/proj/dev"


class World:
    """A stack with history, a secret and a running update, and a snapshot of all of it."""

    def __init__(self, api: Api, update: Update) -> None:
        self.api = api
        self.update = update

    async def snapshot(self) -> dict[str, Any]:
        api = self.api
        return {
            "export": await api.export_bytes(S),
            "stack": await api.stack_json(S),
            "history": await api.history(S),
            "stacks": (await api.list_stacks())["stacks"],
            "status": await body_json(await api.status(self.update)),
            "events": await body_json(await api.call("GET", f"{self.update.path}/events")),
        }

    def body_routes(self) -> list[tuple[str, str, str | None]]:
        """(method, path, lease) of every route that reads a JSON body."""
        u = self.update
        return [
            ("POST", f"/api/stacks/{DEFAULT_ORG}/proj", None),
            ("PATCH", f"/api/stacks/{S}/tags", None),
            ("POST", f"/api/stacks/{S}/rename", None),
            ("POST", f"/api/stacks/{S}/import", None),
            ("POST", f"/api/stacks/{S}/encrypt", None),
            ("POST", f"/api/stacks/{S}/decrypt", None),
            ("POST", f"/api/stacks/{S}/batch-encrypt", None),
            ("POST", f"/api/stacks/{S}/batch-decrypt", None),
            ("POST", f"/api/stacks/{S}/update", None),
            ("POST", f"/api/stacks/{S}/preview", None),
            ("POST", f"/api/stacks/{S}/update/{self.pending_id}", None),
            ("POST", f"{u.path}/renew_lease", u.token),
            ("PATCH", f"{u.path}/checkpoint", u.token),
            ("PATCH", f"{u.path}/checkpointverbatim", u.token),
            ("PATCH", f"{u.path}/checkpointdelta", u.token),
            ("POST", f"{u.path}/events/batch", u.token),
            ("POST", f"{u.path}/complete", u.token),
        ]

    pending_id = ""


@pytest.fixture
async def world(api: Api) -> World:
    await api.new_stack(S, tags={"keep": "me"})
    await api.run_update(S, untyped(2), message="first")
    update = await api.started(S)
    await assert_ok(await api.events(update, [stdout_event(0)]), 204)
    await assert_ok(await api.verbatim(update, json.dumps(untyped(3)).encode(), 1), 204)
    w = World(api, update)
    w.pending_id = (await api.new_update(S)).id
    return w


async def send_everywhere(
    world: World,
    raw: bytes,
    *,
    gzip_body: bool = False,
    status: int = 400,
    skip_start: bool = False,
) -> None:
    for method, path, lease in world.body_routes():
        if skip_start and path.endswith(world.pending_id):
            continue
        response = await world.api.call(method, path, raw=raw, gzip_body=gzip_body, lease=lease)
        await assert_error_at(response, status, method, path)


async def assert_error_at(response: Any, status: int, method: str, path: str) -> None:
    """``assert_error``, naming the route in the failure (these tests sweep every route)."""
    try:
        await assert_error(response, status)
    except AssertionError as exc:
        raise AssertionError(f"{method} {path}: {exc}") from None


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b"not json",
        b'{"a":1}}',
        b'{"a":1} {"b":2}',
        b"{'single': 'quotes'}",
        b'{"a":1,}',
        b'{"a" 1}',
        b"\xff\xfe{}",
        b'{"a":"\xff"}',
        b'{"a": NaN}',
        b'{"a": Infinity}',
        b'{"a": -Infinity}',
        b'{"events":[{"sequence":NaN,"timestamp":1,"stdoutEvent":{}}]}',
        b'{"a": "\x01"}',
    ],
)
async def test_malformed_json_everywhere(world: World, raw: bytes) -> None:
    before = await world.snapshot()
    await send_everywhere(world, raw)
    await send_everywhere(world, raw, gzip_body=True)
    assert await world.snapshot() == before


@pytest.mark.parametrize("raw", [b"", b"  \n", b"null", b"[]", b"1", b'"text"', b"true"])
async def test_empty_body_or_not_an_object(world: World, raw: bytes) -> None:
    before = await world.snapshot()
    # Starting an update may have an empty body (no tags); every other route needs one.
    await send_everywhere(world, raw, skip_start=not raw.strip())
    assert await world.snapshot() == before


@pytest.mark.parametrize("depth", [100_000, 400_000])
async def test_deeply_nested_json(world: World, depth: int) -> None:
    before = await world.snapshot()
    for raw in (b"[" * depth, b'{"a":' * depth, b'{"events":' + b"[" * depth):
        # 400_000 bytes is above the size where parsing moves to a thread.
        await send_everywhere(world, raw, gzip_body=depth > 100_000)
    assert await world.snapshot() == before
    assert (await world.api.client.get("/healthz")).status_code == 200
    assert (await world.api.get_stack(S)).status_code == 200


async def test_deeply_nested_state_inside_a_valid_envelope(world: World) -> None:
    api, update = world.api, world.update
    deep = b"[" * 50_000 + b"]" * 50_000
    before = await world.snapshot()
    raw = b'{"version":3,"untypedDeployment":{"version":3,"deployment":{"x":' + deep
    raw += b'}},"sequenceNumber":2}'
    response = await api.call(
        "PATCH", f"{update.path}/checkpointverbatim", raw=raw, gzip_body=True, lease=update.token
    )
    await assert_error(response, 400)
    raw = b'{"version":3,"deployment":{"x":' + deep + b"}}"
    await assert_error(await api.import_state(S, None, raw=raw), 400)
    assert await world.snapshot() == before


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("renew", {"token": "", "duration": True}),
        ("renew", {"token": "", "duration": "300"}),
        ("renew", {"token": "", "duration": 1.5}),
        ("events", {"events": {}}),
        ("events", {"events": [1]}),
        ("events", {"events": [{"sequence": True, "stdoutEvent": {}}]}),
        ("events", {"events": [{"sequence": "1", "stdoutEvent": {}}]}),
        ("events", {"events": [{"sequence": -1, "stdoutEvent": {}}]}),
        ("events", {"events": [{"stdoutEvent": {"message": "no sequence"}}]}),
        ("events", {"events": [{"sequence": 5}]}),
        ("events", {"events": [{"sequence": 5, "stdoutEvent": {}, "diagnosticEvent": {}}]}),
        ("events", {"events": [stdout_event(i) for i in range(1001)]}),
        ("complete", {"status": True}),
        ("start", {"tags": ["a"]}),
        ("start", {"tags": {"bad tag!": "x"}}),
        ("start", {"tags": {"t": 1}}),
        ("create", {"options": {"dryRun": "yes"}}),
        ("create", {"options": []}),
        ("create", {"config": {"k": "v"}}),
        ("create", {"config": {"k": {"string": 1}}}),
        ("create", {"metadata": {"message": 5}}),
        ("create", {"metadata": {"environment": {"k": 1}}}),
        ("tags", {"a": 1}),
        ("tags", {"": "x"}),
        ("tags", {"x" * 41: "x"}),
        ("tags", {"t": "v" * 257}),
        ("rename", {"newName": ["x"]}),
        ("rename", {"newName": "ok", "newProject": 3}),
    ],
)
async def test_wrong_field_types(world: World, route: str, body: Any) -> None:
    api, u = world.api, world.update
    path, lease = {
        "renew": (f"{u.path}/renew_lease", u.token),
        "events": (f"{u.path}/events/batch", u.token),
        "complete": (f"{u.path}/complete", u.token),
        "start": (f"/api/stacks/{S}/update/{world.pending_id}", None),
        "create": (f"/api/stacks/{S}/update", None),
        "tags": (f"/api/stacks/{S}/tags", None),
        "rename": (f"/api/stacks/{S}/rename", None),
    }[route]
    method = "PATCH" if route == "tags" else "POST"
    before = await world.snapshot()
    await assert_error(await api.call(method, path, body, lease=lease), 400)
    assert await world.snapshot() == before


async def test_lone_surrogates_in_tag_values_are_400(world: World) -> None:
    """JSON may escape a lone surrogate (\\ud800); it is not text and cannot be stored."""
    api = world.api
    before = await world.snapshot()
    raw = b'{"t": "\\ud800"}'
    await assert_error(await api.call("PATCH", f"/api/stacks/{S}/tags", raw=raw), 400)
    raw = b'{"stackName": "other", "tags": {"t": "\\udfff"}}'
    await assert_error(await api.call("POST", f"/api/stacks/{DEFAULT_ORG}/proj", raw=raw), 400)
    assert await world.snapshot() == before


async def test_unknown_stacks_and_updates_are_404(world: World) -> None:
    api, u = world.api, world.update
    missing = f"{DEFAULT_ORG}/proj/missing"
    for method, path, body in (
        ("GET", f"/api/stacks/{missing}", None),
        ("DELETE", f"/api/stacks/{missing}", None),
        ("PATCH", f"/api/stacks/{missing}/tags", {}),
        ("POST", f"/api/stacks/{missing}/rename", {"newName": "x", "newProject": "proj"}),
        ("GET", f"/api/stacks/{missing}/export", None),
        ("GET", f"/api/stacks/{missing}/export/0", None),
        ("POST", f"/api/stacks/{missing}/import", untyped(0)),
        ("GET", f"/api/stacks/{missing}/updates", None),
        ("GET", f"/api/stacks/{missing}/updates/latest", None),
        ("POST", f"/api/stacks/{missing}/update", {}),
        ("POST", f"/api/stacks/{missing}/update/{u.id}", {}),
        ("GET", f"/api/stacks/{missing}/update/{u.id}", None),
        ("POST", f"/api/stacks/{missing}/update/{u.id}/cancel", None),
        ("GET", f"/api/stacks/{missing}/update/{u.id}/events", None),
        ("GET", f"/api/stacks/{S}/update/nope", None),
        ("GET", f"/api/stacks/{S}/update/nope/events", None),
        ("POST", f"/api/stacks/{S}/update/nope", {}),
        ("POST", f"/api/stacks/{S}/update/nope/cancel", None),
    ):
        kwargs: dict[str, Any] = {} if body is None else {"body": body}
        response = await api.call(method, path, **kwargs)
        await assert_error_at(response, 404, method, path)


@pytest.mark.parametrize(
    "ref",
    [
        f"{DEFAULT_ORG}/proj/bad%20name",
        f"{DEFAULT_ORG}/proj/{'s' * 101}",
        f"{DEFAULT_ORG}/proj/a*b",
        f"{DEFAULT_ORG}/pr+oj/dev",
        f"{DEFAULT_ORG}/{'p' * 101}/dev",
        "ab/proj/dev",
        "-abc/proj/dev",
        "abc-/proj/dev",
        "a.bc/proj/dev",
        f"{'o' * 41}/proj/dev",
        f"{DEFAULT_ORG}/proj/dev%0A",  # a trailing newline
        f"{DEFAULT_ORG}/proj%0A/dev",
        "acme%0A/proj/dev",
    ],
)
async def test_names_the_cli_rejects_are_400(api: Api, ref: str) -> None:
    org, project, stack = ref.split("/")
    for method, path, body in (
        ("GET", f"/api/stacks/{ref}", None),
        ("GET", f"/api/stacks/{ref}/export", None),
        ("POST", f"/api/stacks/{ref}/encrypt", {"plaintext": ""}),
        ("POST", f"/api/stacks/{ref}/update", {}),
        ("POST", f"/api/stacks/{org}/{project}", {"stackName": unquote(stack)}),
    ):
        kwargs: dict[str, Any] = {} if body is None else {"body": body}
        response = await api.call(method, path, **kwargs)
        await assert_error_at(response, 400, method, path)
    assert (await api.list_stacks())["stacks"] == []


async def test_names_at_the_limits_are_accepted(api: Api) -> None:
    for ref in (
        f"{'o' * 40}/{'p' * 100}/{'s' * 100}",
        "abc/p/s",
        "a-_9/proj.x_y-z/Stack.Name_1-2",
    ):
        await api.new_stack(ref)
        assert (await api.stack_json(ref))["stackName"] == ref.split("/")[2]


async def test_oversized_bodies_are_413(custom_app) -> None:
    async with custom_app(max_request_bytes=4096, max_inflated_bytes=16384) as (_, api):
        await api.new_stack(S)
        update = await api.started(S)
        big = json.dumps({"events": [stdout_event(i, "x" * 100) for i in range(50)]}).encode()
        assert len(big) > 4096
        response = await api.call(
            "POST", f"{update.path}/events/batch", raw=big, lease=update.token
        )
        await assert_error(response, 413)
        plain_import = json.dumps(untyped(60)).encode()
        assert len(plain_import) > 4096
        response = await api.call("POST", f"/api/stacks/{S}/import", raw=plain_import)
        await assert_error(response, 413)
        # Small when compressed, too large once inflated.
        inflated = json.dumps(untyped(200)).encode()
        assert len(inflated) > 16384 and len(gz(inflated)) < 4096
        await assert_error(await api.import_state(S, None, raw=inflated), 413)
        response = await api.call(
            "POST", f"{update.path}/events/batch", raw=big * 4, gzip_body=True, lease=update.token
        )
        await assert_error(response, 413)
        assert [h["kind"] for h in await api.history(S)] == ["update"]  # no import
        assert (await body_json(await api.call("GET", f"{update.path}/events")))["events"] == []
        # Within the limits, all is well.
        await assert_ok(await api.events(update, [stdout_event(0)]), 204)


async def test_gzip_bombs_are_413(custom_app) -> None:
    async with custom_app(max_request_bytes=256 * 1024, max_inflated_bytes=1024 * 1024) as (
        _,
        api,
    ):
        await api.new_stack(S)
        update = await api.started(S)
        bomb = gzip.compress(b" " * (64 * 1024 * 1024), compresslevel=9)
        assert len(bomb) < 128 * 1024
        members = gzip.compress(b" " * 200_000) * 6  # multi-member, 1.2 MB in all
        for payload in (bomb, members):
            for method, path, lease in (
                ("POST", f"/api/stacks/{S}/import", None),
                ("POST", f"/api/stacks/{S}/batch-decrypt", None),
                ("PATCH", f"{update.path}/checkpoint", update.token),
                ("PATCH", f"{update.path}/checkpointverbatim", update.token),
                ("POST", f"{update.path}/events/batch", update.token),
            ):
                response = await api.call(
                    method,
                    path,
                    raw=payload,
                    lease=lease,
                    headers={"Content-Encoding": "gzip"},
                )
                await assert_error(response, 413)
        assert (await api.client.get("/healthz")).status_code == 200
        assert json.loads(await api.export_bytes(S))["deployment"]["manifest"]["version"] == ""


async def test_invalid_gzip_is_400(world: World) -> None:
    api = world.api
    good = gz(json.dumps({"events": [stdout_event(1)]}))
    before = await world.snapshot()
    for payload in (
        b"not gzip at all",
        good[:-4],  # truncated
        good[:20],
        good + b"garbage",
        good[:10] + bytes([good[10] ^ 0xFF]) + good[11:],
        gzip.compress(b"", mtime=0) * 200_000,  # 4 MB of empty members: minutes, once
    ):
        for method, path, lease in world.body_routes():
            response = await api.call(
                method, path, raw=payload, lease=lease, headers={"Content-Encoding": "gzip"}
            )
            await assert_error_at(response, 400, method, path)
    assert await world.snapshot() == before


async def test_unsupported_content_encoding(world: World) -> None:
    api, u = world.api, world.update
    response = await api.call(
        "POST",
        f"{u.path}/events/batch",
        {"events": [stdout_event(1)]},
        lease=u.token,
        headers={"Content-Encoding": "br"},
    )
    assert response.status_code in (400, 415)
    await assert_error(response, response.status_code)


async def test_gzip_is_accepted_on_every_body_route(api: Api) -> None:
    """The CLI gzips some routes; the server reads gzip wherever it comes."""
    await api.new_stack(S)
    response = await api.call("PATCH", f"/api/stacks/{S}/tags", {"a": "b"}, gzip_body=True)
    await assert_ok(response, 204)
    assert (await api.stack_json(S))["tags"] == {"a": "b"}
    ciphertext = (
        await body_json(
            await api.call(
                "POST", f"/api/stacks/{S}/encrypt", {"plaintext": "eA=="}, gzip_body=True
            )
        )
    )["ciphertext"]
    decrypted = await api.call(
        "POST", f"/api/stacks/{S}/decrypt", {"ciphertext": ciphertext}, gzip_body=True
    )
    assert (await body_json(decrypted))["plaintext"] == "eA=="
    response = await api.call(
        "POST", f"/api/stacks/{S}/update", {"options": {"dryRun": False}}, gzip_body=True
    )
    update_id = (await body_json(response))["updateID"]
    response = await api.call("POST", f"/api/stacks/{S}/update/{update_id}", {}, gzip_body=True)
    token = (await body_json(response))["token"]
    path = f"/api/stacks/{S}/update/{update_id}"
    response = await api.call(
        "POST", f"{path}/renew_lease", {"duration": 60}, gzip_body=True, lease=token
    )
    assert response.status_code == 200
    response = await api.call(
        "POST", f"{path}/complete", {"status": "succeeded"}, gzip_body=True, lease=token
    )
    await assert_ok(response, 204)
    assert (await api.history(S))[0]["result"] == "succeeded"


async def test_server_stays_healthy_after_bad_input(world: World) -> None:
    api = world.api
    for raw in (b"[" * 200_000, b"\x00" * 1000, b'{"a":' + b'"' * 1000):
        await send_everywhere(world, raw)
    assert (await api.client.get("/readyz")).status_code == 200
    await assert_ok(await world.api.complete(world.update), 204)
    assert (await api.stack_json(S))["activeUpdate"] == ""


async def test_integers_beyond_64_bits_are_400(world: World) -> None:
    """Python ints are unbounded; the databases' are not. An int the stores cannot hold
    must be refused as bad input, not end in a 500."""
    api, u = world.api, world.update
    before = await world.snapshot()
    for query in ({"page": str(2**62)}, {"page": str(2**64)}, {"pageSize": str(2**64)}):
        response = await api.call("GET", f"/api/stacks/{S}/updates", query=query)
        # An empty page is a fine answer to a page far past the end; a 500 is not.
        if response.status_code != 200:
            await assert_error(response, 400)
        else:
            assert (await body_json(response))["updates"] == []
    for token in (str(2**63), str(2**64)):
        response = await api.call("GET", f"{u.path}/events", query={"continuationToken": token})
        if response.status_code != 200:
            await assert_error(response, 400)
        else:
            assert (await body_json(response))["events"] == []
    for sequence in (2**63, 2**64):
        await assert_error(await api.events(u, [stdout_event(sequence)]), 400)
    for body in ({"token": "", "duration": 2**64}, {"token": "", "duration": -(2**64)}):
        response = await api.call("POST", f"{u.path}/renew_lease", body, lease=u.token)
        assert response.status_code in (200, 400)
        if response.status_code == 400:
            await assert_error(response, 400)
    await assert_error(await api.verbatim(u, b'{"version":3,"deployment":{}}', 2**64), 400)
    await assert_error(await api.export(S, 2**70), 404)
    assert await world.snapshot() == before


async def test_negative_lease_duration_is_400(world: World) -> None:
    """A negative duration is not a duration; it must not cut the lease to a second."""
    api, u = world.api, world.update
    response = await api.call(
        "POST", f"{u.path}/renew_lease", {"token": "", "duration": -5}, lease=u.token
    )
    await assert_error(response, 400)
    body = await body_json(await api.renew(u, 300))
    assert body["token"] == u.token


async def test_nul_characters_in_tag_values_are_400(world: World) -> None:
    """PostgreSQL text cannot hold NUL; the answer must be the same 400 on every backend."""
    api = world.api
    before = await world.snapshot()
    raw = b'{"t": "a\\u0000b"}'
    await assert_error(await api.call("PATCH", f"/api/stacks/{S}/tags", raw=raw), 400)
    raw = b'{"stackName": "other", "tags": {"t": "\\u0000"}}'
    await assert_error(await api.call("POST", f"/api/stacks/{DEFAULT_ORG}/proj", raw=raw), 400)
    raw = b'{"tags": {"t": "\\u0000"}}'
    path = f"/api/stacks/{S}/update/{world.pending_id}"
    await assert_error(await api.call("POST", path, raw=raw), 400)
    assert await world.snapshot() == before


@pytest.mark.parametrize(
    "query",
    [
        {"project": "a\x00b"},
        {"organization": "org\x00"},
        {"tagName": "t\x00"},
        {"tagName": "keep", "tagValue": "m\x00e"},
    ],
)
async def test_nul_characters_in_list_filters(world: World, query: dict[str, str]) -> None:
    response = await world.api.call("GET", "/api/user/stacks", query=query)
    if response.status_code == 200:
        assert (await body_json(response))["stacks"] == []
    else:
        await assert_error(response, 400)


# Numbers no float64 holds ----------------------------------------------------------------

BEYOND_FLOAT64 = [b"1e400", b"-1e400", b"1E+999", b"1" + b"0" * 400 + b".5", b"1" + b"0" * 400]


@pytest.mark.parametrize("number", BEYOND_FLOAT64, ids=lambda n: n[:8].decode())
async def test_numbers_beyond_float64_are_400_everywhere(world: World, number: bytes) -> None:
    """Python reads 1e400 as inf, and inf was stored as ``Infinity``: after that, history
    and the events listing were JSON no Go client decodes."""
    api, u = world.api, world.update
    before = await world.snapshot()
    config = b'{"config":{"k":{"string":"v","n":' + number + b"}}}"
    response = await api.call("POST", f"/api/stacks/{S}/update", raw=config)
    await assert_error(response, 400)
    event = b'{"sequence":7,"timestamp":1,"stdoutEvent":{"message":"m","n":' + number + b"}}"
    response = await api.call(
        "POST", f"{u.path}/events/batch", raw=b'{"events":[' + event + b"]}", lease=u.token
    )
    await assert_error(response, 400)
    await send_everywhere(world, b'{"a":[' + number + b"]}")
    await send_everywhere(world, b'{"a":[' + number + b"]}", gzip_body=True)
    assert await world.snapshot() == before


@pytest.mark.parametrize("timestamp", [2**63, -(2**63) - 1, 2**64, 1.5, "1", True, [1]])
async def test_event_timestamps_are_64_bit_integers(world: World, timestamp: Any) -> None:
    """The CLI's EngineEvent.Timestamp is a Go int: anything else breaks the listing."""
    api, u = world.api, world.update
    before = await world.snapshot()
    event = {**stdout_event(7), "timestamp": timestamp}
    await assert_error(await api.events(u, [event]), 400)
    assert await world.snapshot() == before
    await assert_ok(await api.events(u, [{**stdout_event(8), "timestamp": -(2**63)}]), 204)


async def test_non_standard_numbers_stored_earlier_are_read_as_null(world: World) -> None:
    """Rows written before these checks may hold Infinity or NaN: reads stay JSON."""
    api, u = world.api, world.update
    meta = api.client.app.extensions["procella"].meta
    async with meta.transaction() as conn:
        await conn.execute(
            "UPDATE updates SET config = ? WHERE stack_id = (SELECT stack_id FROM updates "
            "WHERE id = ?)",
            ('{"k":{"string":"v","n":Infinity,"m":[NaN,-Infinity]}}', u.id),
        )
        await conn.execute(
            "UPDATE update_events SET body = ? WHERE update_id = ?",
            ('{"sequence":0,"timestamp":1,"stdoutEvent":{"message":"NaN","n":NaN}}', u.id),
        )
    history = await api.history(S)
    assert history[0]["config"] == {"k": {"string": "v", "n": None, "m": [None, None]}}
    latest = await body_json(await api.call("GET", f"/api/stacks/{S}/updates/latest"))
    assert latest["info"]["config"] == history[0]["config"]
    events = await body_json(await api.call("GET", f"{u.path}/events"))
    assert events["events"][0]["stdoutEvent"] == {"message": "NaN", "n": None}


async def test_rows_nested_deeper_than_the_limit_read_as_empty(world: World) -> None:
    """A config stored before the nesting limit (~970 deep) made every history call a 500."""
    api = world.api
    meta = api.client.app.extensions["procella"].meta
    deep = '{"k":{"string":"v","deep":' + '{"v":' * 970 + "1" + "}" * 972
    async with meta.transaction() as conn:
        await conn.execute("UPDATE updates SET config = ? WHERE id = ?", (deep, world.update.id))
    history = await api.history(S)
    assert [h["config"] for h in history] == [{}, {}]
    latest = await body_json(await api.call("GET", f"/api/stacks/{S}/updates/latest"))
    assert latest["info"]["config"] == {}


# Nesting ---------------------------------------------------------------------------------


def nested(levels: int, inner: Any = 1) -> Any:
    """A value ``levels`` deep, alternating objects and arrays."""
    value = inner
    for i in range(levels):
        value = [value] if i % 2 else {"k": value}
    return value


async def test_config_nested_to_the_limit_is_stored_and_read_back(api: Api) -> None:
    """Bodies nest at most MAX_DEPTH levels; whatever is stored within that, every read
    can answer (history used to fail with a 500 at every call after a ~970-deep config)."""
    await api.new_stack(S)
    config = {"k": {"string": "v", "deep": nested(MAX_DEPTH - 3)}}  # in body, config, k
    update = await api.started(S, config=config)
    await assert_ok(await api.complete(update), 204)
    history = await api.history(S)
    assert history[0]["config"] == config
    latest = await body_json(await api.call("GET", f"/api/stacks/{S}/updates/latest"))
    assert latest["info"]["config"] == config
    too_deep = {"k": {"string": "v", "deep": nested(MAX_DEPTH - 2)}}
    await assert_error(await api.create_update(S, config=too_deep), 400)
    assert await api.history(S) == history


def nested_text(levels: int) -> bytes:
    """``compact(nested(levels))``, for depths ``json.dumps`` cannot reach."""
    text = b"1"
    for i in range(levels):
        text = b"[" + text + b"]" if i % 2 else b'{"k":' + text + b"}"
    return text


@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 975, 5000])
@pytest.mark.parametrize("pad", [0, 300_000], ids=["small", "large"])
async def test_bodies_nested_beyond_the_limit_are_400(world: World, levels: int, pad: int) -> None:
    """The same limit whether the body is parsed on the event loop or, past 256 KiB, in a
    thread (where ~975 levels used to pass parsing and fail later with a 500)."""
    api, u = world.api, world.update
    assert nested_text(3) == compact(nested(3))
    before = await world.snapshot()
    filler = b"x" * pad
    # In the body, config and k; in the body, events and the event.
    config = b'{"config":{"k":{"string":"' + filler + b'","deep":' + nested_text(levels - 3)
    response = await api.call("POST", f"/api/stacks/{S}/update", raw=config + b"}}}")
    await assert_error(response, 400)
    event = compact(stdout_event(7, filler.decode()))[:-1] + b',"deep":' + nested_text(levels - 3)
    response = await api.call(
        "POST",
        f"{u.path}/events/batch",
        raw=b'{"events":[' + event + b"}]}",
        gzip_body=True,
        lease=u.token,
    )
    await assert_error(response, 400)
    await send_everywhere(
        world, b'{"pad":"' + filler + b'","deep":' + nested_text(levels - 1) + b"}"
    )
    assert await world.snapshot() == before


# Property values sit 6 levels down in the deepest envelopes: checkpointverbatim's
# body/untypedDeployment/deployment/resources/resource/outputs, and a journal's
# body/entries/entry/operation/resource/outputs.
ENVELOPE = 6


def deep_resource(levels: int) -> dict[str, Any]:
    """A resource whose outputs hold a value ``levels`` deep."""
    return resource_state("deep", outputs={"deep": nested(levels)})


async def test_a_state_nested_to_the_limit_passes_every_state_route(api: Api) -> None:
    """Real states nest; one that fills the limit in the deepest envelope is accepted by
    every route that takes a state, and read back as sent."""
    state = untyped(1)
    state["deployment"]["resources"].append(deep_resource(MAX_DEPTH - ENVELOPE))
    text = compact(state)
    await api.new_stack(S)
    update = await api.started(S)
    await assert_ok(await api.verbatim(update, text, 1), 204)
    await assert_ok(await api.complete(update), 204)
    assert await api.export_bytes(S) == text
    update = await api.started(S)
    await assert_ok(await api.checkpoint(update, state), 204)
    await assert_ok(await api.complete(update), 204)
    assert strict_json(await api.export_bytes(S)) == state
    update = await api.new_update(S)
    await api.begin(update, {"tags": None, "journalVersion": 1})
    resource = deep_resource(MAX_DEPTH - ENVELOPE)
    entries = [
        journal_entry(0, 1, 1, operation={"resource": resource, "type": "creating"}),
        journal_entry(1, 2, 1, state=resource),
    ]
    await assert_ok(await api.journal(update, entries), 204)
    await assert_ok(await api.complete(update), 204)
    assert resource in strict_json(await api.export_bytes(S))["deployment"]["resources"]
    other = f"{DEFAULT_ORG}/proj/other"
    await api.new_stack(other)
    await assert_ok(await api.import_state(other, state), 200)
    assert await api.export_bytes(other) == text
    # One level more is refused by each of them.
    deeper = deep_resource(MAX_DEPTH - ENVELOPE + 1)
    state["deployment"]["resources"][-1] = deeper
    update = await api.started(S)
    message = await assert_error(await api.verbatim(update, compact(state), 1), 400)
    assert f"deeper than {MAX_DEPTH}" in message
    entries = [journal_entry(0, 1, 1, operation={"resource": deeper, "type": "creating"})]
    message = await assert_error(await api.journal(update, entries), 400)
    assert f"deeper than {MAX_DEPTH}" in message


# Names and tags --------------------------------------------------------------------------


@pytest.mark.parametrize("name", [".", ".."])
async def test_dot_segments_are_not_stack_or_project_names(world: World, name: str) -> None:
    """``.`` and ``..`` are path segments clients resolve away: no URL could name them."""
    api = world.api
    before = await world.snapshot()
    response = await api.call("POST", f"/api/stacks/{DEFAULT_ORG}/proj", {"stackName": name})
    assert "are not names" in await assert_error(response, 400)
    for body in ({"newName": name}, {"newName": "fine", "newProject": name}):
        response = await api.call("POST", f"/api/stacks/{S}/rename", body)
        assert "are not names" in await assert_error(response, 400)
    assert await world.snapshot() == before


@pytest.mark.parametrize("tags", [[], 0, "", False, ["a"], "a=b"])
async def test_create_stack_with_tags_of_the_wrong_type_is_400(world: World, tags: Any) -> None:
    api = world.api
    before = await world.snapshot()
    body = {"stackName": "other", "tags": tags}
    response = await api.call("POST", f"/api/stacks/{DEFAULT_ORG}/proj", body)
    assert "tags must be a JSON object" in await assert_error(response, 400)
    assert await world.snapshot() == before


async def test_a_nul_in_an_update_id_is_404_on_every_backend(api: Api) -> None:
    """The update id in the URL is never validated; PostgreSQL text cannot hold NUL and
    psycopg's DataError is not translated.

    (On PostgreSQL it answered 500 instead of 404.)
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

    (On PostgreSQL it answered 500 instead of 400.)
    """
    await api.new_stack(S)
    token = base64.urlsafe_b64encode(json.dumps(["a\x00", "b", "c"]).encode()).decode()
    response = await api.call("GET", "/api/user/stacks", query={"continuationToken": token})
    if response.status_code != 200:
        await assert_error(response, 400)
