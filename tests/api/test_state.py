"""Stack state: export (latest and by version), import with its status poll, history."""

from __future__ import annotations

import json
from typing import Any

from quart import typing as quart_typing

from tests.helpers import (
    DEFAULT_ORG,
    Api,
    assert_error,
    assert_ok,
    body_json,
    compact,
    expire_lease,
    untyped,
)

S = f"{DEFAULT_ORG}/proj/dev"


async def test_export_of_a_never_updated_stack_is_a_valid_v3_deployment(api: Api) -> None:
    await api.new_stack(S)
    for response in (await api.export(S), await api.export(S, 0)):
        assert response.status_code == 200
        body = await body_json(response)
        assert body["version"] == 3
        assert isinstance(body["deployment"], dict)
        manifest = body["deployment"]["manifest"]
        assert manifest["time"] == "0001-01-01T00:00:00Z"
        assert manifest["magic"] == "" and manifest["version"] == ""
        assert "features" not in body


async def test_export_of_a_version_that_does_not_exist_is_404(api: Api) -> None:
    await api.new_stack(S)
    await assert_error(await api.export(S, 1), 404)
    await api.run_update(S, untyped(1))
    await assert_ok(await api.export(S, 1), 200)
    await assert_error(await api.export(S, 2), 404)
    await assert_error(await api.export(f"{DEFAULT_ORG}/proj/nope"), 404)


async def test_export_by_version(api: Api) -> None:
    await api.new_stack(S)
    one = await api.run_update(S, untyped(1))
    two = await api.run_update(S, untyped(2))
    assert (one.version, two.version) == (1, 2)
    assert len(json.loads(await api.export_bytes(S, 1))["deployment"]["resources"]) == 1
    assert len(json.loads(await api.export_bytes(S, 2))["deployment"]["resources"]) == 2
    assert await api.export_bytes(S) == await api.export_bytes(S, 2)
    # An update that wrote no checkpoint leaves the previous state in place.
    three = await api.run_update(S, None)
    assert three.version == 3
    assert await api.export_bytes(S, 3) == await api.export_bytes(S, 2)


async def test_import_then_poll_the_update_status(api: Api) -> None:
    await api.new_stack(S)
    state = untyped(4)
    raw = compact(state)
    response = await api.import_state(S, state)
    assert response.status_code == 200
    update_id = (await body_json(response))["updateId"]
    assert isinstance(update_id, str) and update_id
    # The CLI polls STACK/update/{id}.
    poll = await api.call("GET", f"/api/stacks/{S}/update/{update_id}")
    assert poll.status_code == 200
    assert await body_json(poll) == {"status": "succeeded", "events": [], "continuationToken": None}
    assert await api.export_bytes(S) == raw
    stack = await api.stack_json(S)
    assert stack["version"] == 1
    [entry] = await api.history(S)
    assert entry["kind"] == "import"
    assert entry["result"] == "succeeded"
    assert entry["version"] == 1
    assert entry["resourceCount"] == 4
    summary = (await api.list_stacks())["stacks"][0]
    assert summary["resourceCount"] == 4


async def test_import_keeps_the_exact_bytes(api: Api) -> None:
    await api.new_stack(S)
    raw = (
        b'{"deployment": {"manifest": {"time":"2024-01-01T00:00:00Z","magic":"","version":""},'
        b'"resources":[{"urn":"urn:pulumi:dev::p::a:b:C::\\u003cx\\u003e","custom":true,'
        b'"type":"a:b:C","outputs":{"s":"\xc3\xa9\xe2\x82\xac"}}]},  "version" : 3}\n'
    )
    await assert_ok(await api.import_state(S, None, raw=raw), 200)
    assert await api.export_bytes(S) == raw


async def test_import_a_v4_deployment_with_features(api: Api) -> None:
    await api.new_stack(S)
    state = {
        "version": 4,
        "features": ["refreshBeforeUpdate"],
        "deployment": untyped(1)["deployment"],
    }
    await assert_ok(await api.import_state(S, state), 200)
    assert json.loads(await api.export_bytes(S))["features"] == ["refreshBeforeUpdate"]


async def test_invalid_imports_change_nothing(api: Api) -> None:
    await api.new_stack(S)
    await api.run_update(S, untyped(1))
    before = await api.export_bytes(S)
    state: Any
    for state in (
        {"version": 5, "deployment": {}},
        {"version": 0, "deployment": {}},
        {"version": "3", "deployment": {}},
        {"version": True, "deployment": {}},
        {"version": 3},
        {"version": 3, "deployment": []},
        {"version": 3, "features": ["views"], "deployment": {}},
        {"version": 4, "features": ["no-such-feature"], "deployment": {}},
        [],
        "text",
    ):
        await assert_error(await api.import_state(S, state), 400)
    await assert_error(await api.import_state(S, None, raw=b"{"), 400)
    assert await api.export_bytes(S) == before
    assert len(await api.history(S)) == 1
    assert (await api.stack_json(S))["version"] == 1


async def test_history_newest_first_with_messages_and_changes(api: Api) -> None:
    await api.new_stack(S)
    env = {"git.head": "abc123", "exec.kind": "cli"}
    first = await api.started(S, message="first", environment=env)
    await api.events(
        first,
        [
            {"sequence": 0, "timestamp": 1, "stdoutEvent": {"message": "x", "color": "raw"}},
            {
                "sequence": 1,
                "timestamp": 2,
                "summaryEvent": {
                    "maybeCorrupt": False,
                    "durationSeconds": 3,
                    "resourceChanges": {"create": 2, "same": 0},
                    "PolicyPacks": {},
                },
            },
        ],
    )
    await assert_ok(await api.checkpoint(first, untyped(2)), 204)
    await assert_ok(await api.complete(first), 204)
    # A preview in between never shows up in the history.
    preview = await api.started(S, "preview", message="a preview", dry_run=True)
    await assert_ok(await api.complete(preview), 204)
    dry = await api.started(S, "update", message="dry", dry_run=True)
    await assert_ok(await api.complete(dry), 204)
    second = await api.run_update(S, untyped(3), message="second", changes={"create": 1, "same": 2})
    failed = await api.started(S, message="failed one")
    await assert_ok(await api.complete(failed, "failed"), 204)

    history = await api.history(S)
    assert [h["message"] for h in history] == ["failed one", "second", "first"]
    assert [h["version"] for h in history] == [3, 2, 1]
    assert [h["result"] for h in history] == ["failed", "succeeded", "succeeded"]
    assert all(h["kind"] == "update" for h in history)
    oldest = history[-1]
    assert oldest["resourceChanges"] == {"create": 2, "same": 0}
    assert oldest["environment"] == env
    assert oldest["config"] == {}
    assert oldest["resourceCount"] == 2
    assert isinstance(oldest["startTime"], int) and oldest["startTime"] > 1_600_000_000
    assert oldest["endTime"] >= oldest["startTime"]
    assert history[1]["resourceChanges"] == {"create": 1, "same": 2}
    assert history[1]["resourceCount"] == 3
    assert second.version == 2


async def test_history_paging(api: Api) -> None:
    await api.new_stack(S)
    for i in range(5):
        await api.run_update(S, None, message=f"m{i}")
    page1 = await api.history(S, pageSize=2, page=1)
    page2 = await api.history(S, pageSize=2, page=2)
    page3 = await api.history(S, pageSize=2, page=3)
    page4 = await api.history(S, pageSize=2, page=4)
    assert [h["message"] for h in page1] == ["m4", "m3"]
    assert [h["message"] for h in page2] == ["m2", "m1"]
    assert [h["message"] for h in page3] == ["m0"]
    assert page4 == []
    assert len(await api.history(S)) == 5
    for query in ({"pageSize": "0"}, {"pageSize": "x"}, {"page": "0"}, {"page": "-1"}):
        response = await api.call("GET", f"/api/stacks/{S}/updates", query=query)
        await assert_error(response, 400)


async def test_history_records_config(api: Api) -> None:
    await api.new_stack(S)
    config = {
        "proj:plain": {"string": "v", "secret": False, "object": False},
        "proj:secret": {"string": "AQID", "secret": True, "object": False},
    }
    update = await api.started(S, config=config)
    await assert_ok(await api.complete(update), 204)
    [entry] = await api.history(S)
    assert entry["config"] == config


async def test_latest_update(api: Api) -> None:
    await api.new_stack(S)
    await assert_error(await api.call("GET", f"/api/stacks/{S}/updates/latest"), 404)
    preview = await api.started(S, "preview", dry_run=True)
    await assert_ok(await api.complete(preview), 204)
    # Previews are not deployments: still none.
    await assert_error(await api.call("GET", f"/api/stacks/{S}/updates/latest"), 404)
    config = {"proj:k": {"string": "v", "secret": False, "object": False}}
    env = {"stack.environments": '[{"id":"x"}]'}
    update = await api.started(S, message="the one", config=config, environment=env)
    await assert_ok(await api.complete(update), 204)
    response = await api.call("GET", f"/api/stacks/{S}/updates/latest")
    assert response.status_code == 200
    info = (await body_json(response))["info"]
    assert info["message"] == "the one"
    assert info["config"] == config
    assert info["environment"] == env
    assert info["version"] == 1
    assert info["kind"] == "update"
    assert info["result"] == "succeeded"


async def test_import_after_an_abandoned_update_is_not_refused(
    app: quart_typing.TestAppProtocol, api: Api
) -> None:
    """After a CLI dies mid-update its lease expires; ``start`` then takes the stack over
    (``free_if_abandoned``) and ``stack rm`` ignores it, but import (every ``pulumi state ...``
    command) and rename still answer "Another update is currently in progress." until the
    garbage collector runs (lease grace 30 s + up to one GC interval).

    (They answered 409.)
    """
    await api.new_stack(S)
    update = await api.started(S)
    await expire_lease(app, update.id)
    await assert_ok(await api.import_state(S, untyped(1)), 200)
