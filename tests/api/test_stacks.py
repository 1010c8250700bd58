"""Stacks: create, get, HEAD project, list (filters, paging), tags, rename, delete."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest

from procella.auth.models import Role
from procella.stacks import service as stack_service
from procella.strictjson import MAX_DEPTH
from tests.helpers import (
    DEFAULT_ORG,
    Api,
    assert_error,
    assert_ok,
    body_json,
    compact,
    untyped,
)

S = f"{DEFAULT_ORG}/proj/dev"


async def test_create_and_get(api: Api) -> None:
    tags = {"pulumi:project": "proj", "pulumi:runtime": "python", "vcs:kind": "github.com"}
    response = await api.create_stack(S, tags=tags)
    assert response.status_code == 200
    assert await body_json(response) == {}  # CreateStackResponse: JSON, no stack echo needed
    body = await api.stack_json(S)
    assert isinstance(body["id"], str) and body["id"]
    assert body["orgName"] == DEFAULT_ORG
    assert body["projectName"] == "proj"
    assert body["stackName"] == "dev"
    assert body["activeUpdate"] == ""
    assert body["tags"] == tags
    assert body["version"] == 0
    assert "currentOperation" not in body
    assert body.get("config") is None  # non-null would make the CLI treat it as ESC


async def test_create_twice_is_409_already_exists(api: Api) -> None:
    await api.new_stack(S)
    message = await assert_error(await api.create_stack(S), 409)
    assert "already exists" in message


async def test_same_stack_name_in_two_projects(api: Api) -> None:
    await api.new_stack(f"{DEFAULT_ORG}/one/dev")
    await api.new_stack(f"{DEFAULT_ORG}/two/dev")
    one = await api.stack_json(f"{DEFAULT_ORG}/one/dev")
    two = await api.stack_json(f"{DEFAULT_ORG}/two/dev")
    assert one["id"] != two["id"]


async def test_get_missing_stack_is_json_404(api: Api) -> None:
    await assert_error(await api.get_stack(f"{DEFAULT_ORG}/proj/nope"), 404)


async def test_create_with_initial_state_exports_it_byte_for_byte(api: Api) -> None:
    # A non-default secrets provider: the CLI sends the initial state with the create.
    state = (
        b'{"version":3, "deployment":{"manifest":{"time":"2024-01-01T00:00:00Z","magic":"",'
        b'"version":"v3.259.0"},"secrets_providers":{"type":"passphrase",'
        b'"state":{"salt":"v1:abc\\u003c"}}}}'
    )
    raw = b'{"stackName":"dev","state":' + state + b"}"
    await assert_ok(await api.call("POST", f"/api/stacks/{DEFAULT_ORG}/proj", raw=raw), 200)
    assert await api.export_bytes(S) == state
    assert await api.export_bytes(S, 0) == state


async def test_head_project(api: Api) -> None:
    response = await api.call("HEAD", f"/api/stacks/{DEFAULT_ORG}/proj")
    assert response.status_code == 404
    await api.new_stack(S)
    response = await api.call("HEAD", f"/api/stacks/{DEFAULT_ORG}/proj")
    assert response.status_code == 200
    response = await api.call("HEAD", f"/api/stacks/{DEFAULT_ORG}/other")
    assert response.status_code == 404


async def test_list_stacks_summary_fields(api: Api) -> None:
    await api.new_stack(S)
    await api.run_update(S, untyped(3))
    [summary] = (await api.list_stacks())["stacks"]
    stack = await api.stack_json(S)
    assert summary["id"] == stack["id"]
    assert summary["orgName"] == DEFAULT_ORG
    assert summary["projectName"] == "proj"
    assert summary["stackName"] == "dev"
    assert summary["resourceCount"] == 3
    assert isinstance(summary["lastUpdate"], int) and summary["lastUpdate"] > 1_600_000_000


async def test_list_stacks_filters(api: Api) -> None:
    await api.new_stack(f"{DEFAULT_ORG}/web/dev", tags={"env": "dev", "team": "a"})
    await api.new_stack(f"{DEFAULT_ORG}/web/prod", tags={"env": "prod"})
    await api.new_stack(f"{DEFAULT_ORG}/db/dev", tags={"env": "dev"})
    await api.new_stack("acme/web/dev", tags={"team": "a"})

    def names(page: dict[str, Any]) -> list[str]:
        return sorted(f"{s['orgName']}/{s['projectName']}/{s['stackName']}" for s in page["stacks"])

    everything = await api.list_stacks()
    assert names(everything) == [
        "acme/web/dev",
        f"{DEFAULT_ORG}/db/dev",
        f"{DEFAULT_ORG}/web/dev",
        f"{DEFAULT_ORG}/web/prod",
    ]
    assert everything.get("continuationToken") is None
    assert names(await api.list_stacks(project="web")) == [
        "acme/web/dev",
        f"{DEFAULT_ORG}/web/dev",
        f"{DEFAULT_ORG}/web/prod",
    ]
    assert names(await api.list_stacks(organization="acme")) == ["acme/web/dev"]
    assert names(await api.list_stacks(organization=DEFAULT_ORG, project="web")) == [
        f"{DEFAULT_ORG}/web/dev",
        f"{DEFAULT_ORG}/web/prod",
    ]
    assert names(await api.list_stacks(tagName="team")) == [
        "acme/web/dev",
        f"{DEFAULT_ORG}/web/dev",
    ]
    assert names(await api.list_stacks(tagName="env", tagValue="dev")) == [
        f"{DEFAULT_ORG}/db/dev",
        f"{DEFAULT_ORG}/web/dev",
    ]
    assert names(await api.list_stacks(tagName="env", tagValue="nope")) == []
    assert names(await api.list_stacks(project="nope")) == []


async def test_list_stacks_pages_with_continuation_token(api: Api) -> None:
    count = 105
    # Mixed case and punctuation: the page boundary must hold under any collation.
    prefixes = ["a", "A", "a-", "a_", "a.", "B", "b", "Z", "_", "-", "."]
    names = [f"{prefixes[i % len(prefixes)]}{i:03d}" for i in range(count)]
    for name in names:
        await api.new_stack(f"{DEFAULT_ORG}/many/{name}")
    await api.new_stack(f"{DEFAULT_ORG}/other/x")
    first = await api.list_stacks(project="many")
    assert len(first["stacks"]) == 100
    token = first["continuationToken"]
    assert isinstance(token, str) and token
    second = await api.list_stacks(project="many", continuationToken=token)
    assert len(second["stacks"]) == count - 100
    assert second.get("continuationToken") is None
    seen = [s["stackName"] for s in first["stacks"] + second["stacks"]]
    assert sorted(seen) == sorted(names)
    assert len(set(seen)) == count
    everything = await api.list_all_stacks()
    assert len(everything) == count + 1


@pytest.mark.parametrize("token", ["!!!", "bm90IGpzb24", "WzEsMiwzXQ==", "e30="])
async def test_list_stacks_invalid_continuation_token(api: Api, token: str) -> None:
    response = await api.call("GET", "/api/user/stacks", query={"continuationToken": token})
    await assert_error(response, 400)


async def test_list_stacks_tag_value_without_name(api: Api) -> None:
    await assert_error(await api.call("GET", "/api/user/stacks", query={"tagValue": "x"}), 400)


async def test_patch_tags_replaces_the_whole_map(api: Api) -> None:
    await api.new_stack(S, tags={"a": "1", "b": "2"})
    response = await api.call("PATCH", f"/api/stacks/{S}/tags", {"b": "3", "c:d": "4"})
    await assert_ok(response, 204)
    assert (await api.stack_json(S))["tags"] == {"b": "3", "c:d": "4"}
    await assert_ok(await api.call("PATCH", f"/api/stacks/{S}/tags", {}), 204)
    assert (await api.stack_json(S))["tags"] == {}


async def test_rename_within_the_project(api: Api) -> None:
    await api.new_stack(S, tags={"k": "v"})
    before = await api.stack_json(S)
    body = {"newName": "staging", "newProject": "proj"}
    await assert_ok(await api.call("POST", f"/api/stacks/{S}/rename", body), 204)
    await assert_error(await api.get_stack(S), 404)
    after = await api.stack_json(f"{DEFAULT_ORG}/proj/staging")
    assert after["id"] == before["id"]
    assert after["stackName"] == "staging"
    assert after["tags"] == {"k": "v"}


async def test_rename_into_another_project_keeps_secrets_and_rewrites_state(api: Api) -> None:
    await api.new_stack(S)
    ciphertext = await api.encrypt_one(S, b"s3cr3t")
    await api.run_update(S, untyped(2, secrets_stack=(DEFAULT_ORG, "proj", "dev")))
    version_before = (await api.stack_json(S))["version"]

    body = {"newName": "prod", "newProject": "newproj"}
    await assert_ok(await api.call("POST", f"/api/stacks/{S}/rename", body), 204)
    new = f"{DEFAULT_ORG}/newproj/prod"
    assert (await api.call("HEAD", f"/api/stacks/{DEFAULT_ORG}/newproj")).status_code == 200
    assert (await api.call("HEAD", f"/api/stacks/{DEFAULT_ORG}/proj")).status_code == 404

    response = await api.decrypt(new, ciphertext)
    assert response.status_code == 200
    assert (await body_json(response))["plaintext"] == "czNjcjN0"  # b64("s3cr3t")

    state = json.loads(await api.export_bytes(new))
    provider = state["deployment"]["secrets_providers"]
    assert provider["type"] == "service"
    assert provider["state"]["owner"] == DEFAULT_ORG
    assert provider["state"]["project"] == "newproj"
    assert provider["state"]["stack"] == "prod"
    assert len(state["deployment"]["resources"]) == 2
    stack = await api.stack_json(new)
    assert stack["version"] > version_before
    latest = (await api.history(new))[0]
    assert latest["kind"] == "rename"
    assert latest["version"] == stack["version"]
    assert latest["resourceCount"] == 2
    # Export of the version before the rename still has the old names.
    old = json.loads(await api.export_bytes(new, version_before))
    assert old["deployment"]["secrets_providers"]["state"]["stack"] == "dev"


async def test_rename_onto_an_existing_stack_is_409_and_changes_nothing(api: Api) -> None:
    await api.new_stack(S)
    await api.new_stack(f"{DEFAULT_ORG}/proj/taken")
    body = {"newName": "taken", "newProject": "proj"}
    await assert_error(await api.call("POST", f"/api/stacks/{S}/rename", body), 409)
    assert (await api.stack_json(S))["stackName"] == "dev"


async def test_rename_with_invalid_names_is_400(api: Api) -> None:
    await api.new_stack(S)
    for body in (
        {"newName": "bad name", "newProject": "proj"},
        {"newName": "x" * 101, "newProject": "proj"},
        {"newName": "ok", "newProject": "bad/project"},
        {"newName": "", "newProject": "proj"},
        {"newName": 5, "newProject": "proj"},
        {"newProject": "proj"},
    ):
        await assert_error(await api.call("POST", f"/api/stacks/{S}/rename", body), 400)
    assert (await api.stack_json(S))["stackName"] == "dev"


async def test_delete_empty_stack(api: Api) -> None:
    await api.new_stack(S)
    response = await api.call("DELETE", f"/api/stacks/{S}", query={"force": "false"})
    await assert_ok(response, 204)
    await assert_error(await api.get_stack(S), 404)
    assert (await api.list_stacks())["stacks"] == []


async def test_delete_stack_with_resources_needs_force(api: Api) -> None:
    await api.new_stack(S)
    await api.run_update(S, untyped(3))
    response = await api.call("DELETE", f"/api/stacks/{S}", query={"force": "false"})
    message = await assert_error(response, 400)
    assert message == "Bad Request: Stack still contains resources."
    assert (await api.stack_json(S))["stackName"] == "dev"
    response = await api.call("DELETE", f"/api/stacks/{S}", query={"force": "true"})
    await assert_ok(response, 204)
    await assert_error(await api.get_stack(S), 404)


async def test_delete_after_import_of_resources_needs_force(api: Api) -> None:
    await api.new_stack(S)
    await assert_ok(await api.import_state(S, untyped(2)), 200)
    response = await api.call("DELETE", f"/api/stacks/{S}", query={"force": "false"})
    assert await assert_error(response, 400) == "Bad Request: Stack still contains resources."


async def test_deleted_stack_name_can_be_reused_with_fresh_state(api: Api) -> None:
    await api.new_stack(S)
    await api.run_update(S, untyped(2))
    old_id = (await api.stack_json(S))["id"]
    await assert_ok(await api.call("DELETE", f"/api/stacks/{S}", query={"force": "true"}), 204)
    await api.new_stack(S)
    stack = await api.stack_json(S)
    assert stack["id"] != old_id
    assert stack["version"] == 0
    state = json.loads(await api.export_bytes(S))
    assert state["version"] == 3 and "resources" not in state["deployment"]
    assert await api.history(S) == []


async def test_delete_missing_stack_is_404(api: Api) -> None:
    response = await api.call(
        "DELETE", f"/api/stacks/{DEFAULT_ORG}/proj/nope", query={"force": "true"}
    )
    await assert_error(response, 404)


async def test_concurrent_creates_of_one_stack(api: Api) -> None:
    results = await asyncio.gather(*(api.create_stack(S) for _ in range(5)))
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200, 409, 409, 409, 409]
    assert len((await api.list_stacks())["stacks"]) == 1


async def test_org_admin_creates_and_lists_only_their_org(as_role, api: Api) -> None:
    await api.new_stack(S)
    alice = await as_role("acme", Role.ADMIN, "alice")
    await alice.new_stack("acme/proj/dev")
    stacks = (await alice.list_stacks())["stacks"]
    assert [(s["orgName"], s["stackName"]) for s in stacks] == [("acme", "dev")]
    # Filtering on an org one is not in lists nothing (no error, no leak).
    assert (await alice.list_stacks(organization=DEFAULT_ORG))["stacks"] == []


async def test_create_stack_body_is_validated(api: Api) -> None:
    path = f"/api/stacks/{DEFAULT_ORG}/proj"
    for raw in (
        b"",
        b"[]",
        b'{"stackName": 1}',
        b'{"stackName": "dev", "tags": {"bad tag!": "x"}}',
        b'{"stackName": "dev", "tags": {"ok": 1}}',
        b'{"stackName": "dev", "tags": ["a"]}',
        b'{"stackName": "dev", "state": {"version": 9, "deployment": {}}}',
        b'{"stackName": "dev", "state": {"version": 3}}',
        b'{"stackName": "dev", "state": "x"}',
        b'{"stackName": "dev", "tags": {"t": "' + b"v" * 257 + b'"}}',
        b'{"stackName": "dev", "config": {"environment": "x"}}',
    ):
        await assert_error(await api.call("POST", path, raw=raw), 400)
    assert (await api.list_stacks())["stacks"] == []


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
