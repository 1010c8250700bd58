"""Every route that reads a body, with arbitrary bodies, through the real app.

For any body (valid ones changed in one to three places, arbitrary JSON, near-JSON bytes,
gzipped or not) a route answers its success status or a 4xx with the ``{"code",
"message"}`` body, never a 5xx; and what it accepted reads back: a created stack is at its
URL, an accepted checkpoint is the export and completes, accepted events list as JSON
Go reads, a 4xx leaves the export as it was.

One app serves all examples of a test (the ``app`` fixture, shared on purpose); each
example works on a stack of its own.
"""

from __future__ import annotations

import itertools
import json
import string
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from quart import typing as quart_typing

from procella.auth.models import Role
from procella.strictjson import MAX_DEPTH
from tests.helpers import (
    DEFAULT_ORG,
    Api,
    Update,
    assert_error,
    body_json,
    compact,
    deployment,
    gz,
    journal_entry,
    make_token,
    resource_state,
    sha256_hex,
    stdout_event,
    step_event,
    step_metadata,
    summary_event,
    text_edit,
    untyped,
)
from tests.property import scaled
from tests.property.strategies import any_json, json_bytes, mutated, reference_depth

shared_app = settings(
    max_examples=scaled(0.6),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_names = itertools.count()


def fresh_stack() -> str:
    return f"{DEFAULT_ORG}/prop/s{next(_names)}"


class Body:
    """A request body: JSON (sent compact) or raw bytes; maybe gzipped."""

    def __init__(self, value: Any = None, raw: bytes | None = None, gzip: bool = False) -> None:
        self.value, self.raw, self.gzip = value, raw, gzip

    def bytes(self) -> bytes:
        data = self.raw if self.raw is not None else compact(self.value)
        return gz(data) if self.gzip else data

    def __repr__(self) -> str:
        what = f"raw={self.raw!r}" if self.raw is not None else f"value={self.value!r}"
        return f"Body({what}, gzip={self.gzip})"


def bodies(template: Any) -> st.SearchStrategy[Body]:
    """Mostly the valid ``template`` changed a little; sometimes any JSON or noise."""
    values = st.one_of(mutated(template), mutated(template), st.just(template), any_json)
    return st.one_of(
        st.builds(Body, values, st.none(), st.booleans()),
        st.builds(Body, st.none(), json_bytes, st.booleans()),
    )


async def send(api: Api, method: str, path: str, body: Body, lease: str | None = None) -> Any:
    headers = {"Content-Encoding": "gzip"} if body.gzip else {}
    return await api.call(method, path, raw=body.bytes(), lease=lease, headers=headers)


async def answer(response: Any, *success: int) -> int:
    """The status, after checking it is a success of the route or a proper 4xx."""
    status: int = response.status_code
    event(f"status {status}")
    if status in success:
        return status
    assert 400 <= status < 500, (status, await response.get_data())
    await assert_error(response, status)
    return status


async def started(api: Api, journal: bool = False) -> Update:
    stack = await api.new_stack(fresh_stack())
    update = await api.new_update(stack)
    return await api.begin(update, {"tags": None, "journalVersion": 1 if journal else 0})


# Stacks -----------------------------------------------------------------------------

stack_template = {"stackName": "dev", "tags": {"env": "prod", "team:x": "a"}}


@shared_app
@given(bodies(stack_template) | bodies({**stack_template, "state": untyped(2)}))
async def test_create_stack(api: Api, body: Body) -> None:
    project = f"p{next(_names)}"
    response = await send(api, "POST", f"/api/stacks/{DEFAULT_ORG}/{project}", body)
    if await answer(response, 200) != 200:
        return
    sent = json.loads(_plain(body))
    stack = f"{DEFAULT_ORG}/{project}/{sent['stackName']}"
    got = await api.stack_json(stack)
    assert got["stackName"] == sent["stackName"]
    assert got["tags"] == (sent.get("tags") or {})
    exported = json.loads(await api.export_bytes(stack))
    if sent.get("state") is not None:
        assert exported == sent["state"]


@shared_app
@given(bodies({"env": "prod", "a.b:c": "", "x": "y" * 256}))
async def test_update_tags(api: Api, body: Body) -> None:
    stack = await api.new_stack(fresh_stack())
    before = await api.stack_json(stack)
    response = await send(api, "PATCH", f"/api/stacks/{stack}/tags", body)
    after = await api.stack_json(stack)
    if await answer(response, 204) == 204:
        assert after["tags"] == json.loads(_plain(body))
    else:
        assert after == before


def _plain(body: Body) -> bytes:
    if body.raw is None:
        return compact(body.value)
    return body.raw


@shared_app
@given(bodies({"newName": "prod", "newProject": "other"}))
async def test_rename_stack(api: Api, body: Body) -> None:
    stack = await api.new_stack(fresh_stack())
    await api.import_state(stack, untyped(2))
    before = await api.export_bytes(stack)
    response = await send(api, "POST", f"/api/stacks/{stack}/rename", body)
    if await answer(response, 204) != 204:
        assert await api.export_bytes(stack) == before
        return
    sent = json.loads(_plain(body))
    org, project, _ = stack.split("/")
    renamed = f"{org}/{sent.get('newProject') or project}/{sent['newName']}"
    assert (await api.stack_json(renamed))["stackName"] == sent["newName"]
    assert len(json.loads(await api.export_bytes(renamed))["deployment"]["resources"]) == 2


@shared_app
@given(bodies(untyped(2)))
async def test_import(api: Api, body: Body) -> None:
    stack = await api.new_stack(fresh_stack())
    response = await send(api, "POST", f"/api/stacks/{stack}/import", body)
    if await answer(response, 200) == 200:
        # Stored exactly as sent (the state is the CLI's bytes).
        assert await api.export_bytes(stack) == _plain(body)
    else:
        exported = json.loads(await api.export_bytes(stack))
        assert not exported["deployment"].get("resources")


# Updates: user token ------------------------------------------------------------------

program = {
    "name": "prop",
    "runtime": "python",
    "main": "",
    "description": "",
    "options": {"dryRun": False, "parallel": 16, "color": "raw"},
    "config": {"a:b": {"string": "x", "secret": False}},
    "metadata": {"message": "m", "environment": {"GIT": "abc"}},
}


@shared_app
@given(st.sampled_from(["update", "preview", "refresh", "destroy"]), bodies(program))
async def test_create_update(api: Api, kind: str, body: Body) -> None:
    stack = await api.new_stack(fresh_stack())
    response = await send(api, "POST", f"/api/stacks/{stack}/{kind}", body)
    if await answer(response, 200) != 200:
        assert await api.history(stack) == []
        return
    update = Update(stack, (await body_json(response))["updateID"])
    status = await api.status(update)
    assert status.status_code == 200 and (await body_json(status))["status"] == "not started"
    # What was stored is served back as JSON Go reads.
    await api.begin(update)
    for info in await api.history(stack):
        json.dumps(info, allow_nan=False)


@shared_app
@given(bodies({"tags": {"env": "x"}, "journalVersion": 1}))
async def test_start_update(api: Api, body: Body) -> None:
    stack = await api.new_stack(fresh_stack())
    update = await api.new_update(stack)
    response = await send(api, "POST", update.path, body)
    state = (await body_json(await api.status(update)))["status"]
    if await answer(response, 200) == 200:
        assert state == "running"
        start = await body_json(response)
        assert start["version"] == 1 and start["journalVersion"] in (0, 1)
    else:
        assert state == "not started"


# Updates: update token ---------------------------------------------------------------


@shared_app
@given(
    bodies(
        {
            "events": [
                stdout_event(0),
                step_event(1, "resOutputsEvent", "same", step_metadata("a"), step_metadata("a")),
                summary_event(2, {"create": 2, "same": 1}),
            ]
        }
    )
)
async def test_events_batch(api: Api, body: Body) -> None:
    update = await started(api)
    response = await send(api, "POST", f"{update.path}/events/batch", body, lease=update.token)
    accepted = await answer(response, 204) == 204
    # Whatever was accepted lists as JSON Go reads, as it was sent, and complete still works.
    listed = await api.call("GET", f"{update.path}/events")
    assert listed.status_code == 200
    events = (await body_json(listed))["events"]
    assert reference_depth(events) <= MAX_DEPTH + 1
    if accepted:
        sent: dict[int, Any] = {}
        for event in json.loads(_plain(body))["events"]:
            sent.setdefault(event["sequence"], event)
        assert events == [sent[sequence] for sequence in sorted(sent)]
    complete = await api.complete(update)
    assert complete.status_code == 204, await complete.get_data()
    for info in await api.history(update.stack):
        json.dumps(info, allow_nan=False)
        assert all(type(v) is int for v in (info.get("resourceChanges") or {}).values())


checkpoint_template = {"isInvalid": False, "version": 3, "deployment": deployment(2)}


@shared_app
@given(bodies(checkpoint_template))
async def test_checkpoint(api: Api, body: Body) -> None:
    update = await started(api)
    before = await api.export_bytes(update.stack)
    response = await send(api, "PATCH", f"{update.path}/checkpoint", body, lease=update.token)
    if await answer(response, 204) != 204:
        assert await api.export_bytes(update.stack) == before
        return
    sent = json.loads(_plain(body))
    exported = json.loads(await api.export_bytes(update.stack))
    assert exported["deployment"] == sent["deployment"]
    assert exported["version"] == sent["version"]
    # A checkpoint that was accepted is a state the update can end with.
    complete = await api.complete(update)
    assert complete.status_code == 204, await complete.get_data()


verbatim_template = {"version": 3, "untypedDeployment": untyped(2), "sequenceNumber": 1}


@shared_app
@given(bodies(verbatim_template))
async def test_checkpoint_verbatim(api: Api, body: Body) -> None:
    update = await started(api)
    before = await api.export_bytes(update.stack)
    path = f"{update.path}/checkpointverbatim"
    response = await send(api, "PATCH", path, body, lease=update.token)
    if await answer(response, 204) != 204:
        assert await api.export_bytes(update.stack) == before
        return
    members = json.loads(_plain(body))
    assert json.loads(await api.export_bytes(update.stack)) == members["untypedDeployment"]
    complete = await api.complete(update)
    assert complete.status_code == 204, await complete.get_data()


FIRST = compact(untyped(2))
SECOND = compact(untyped(3))


def _delta_template() -> dict[str, Any]:
    # One edit that turns FIRST into SECOND: both share the prefix up to the 2nd resource.
    at = len(FIRST) - 3  # before "]}}"
    new_text = SECOND[at : len(SECOND) - 3].decode()
    return {
        "version": 3,
        "checkpointHash": sha256_hex(SECOND),
        "sequenceNumber": 2,
        "deploymentDelta": [text_edit(at, at, new_text)],
    }


@shared_app
@given(bodies(_delta_template()))
async def test_checkpoint_delta(api: Api, body: Body) -> None:
    update = await started(api)
    response = await api.verbatim(update, FIRST, 1)
    assert response.status_code == 204
    path = f"{update.path}/checkpointdelta"
    response = await send(api, "PATCH", path, body, lease=update.token)
    if await answer(response, 204) != 204:
        assert await api.export_bytes(update.stack) == FIRST
        return
    sent = json.loads(_plain(body))
    exported = await api.export_bytes(update.stack)
    assert sha256_hex(exported) == sent["checkpointHash"]
    complete = await api.complete(update)
    # The text is hash-checked, not parsed: complete refuses one that is no deployment.
    await answer(complete, 204)


STACK_URN = "urn:pulumi:dev::proj::pulumi:pulumi:Stack::proj-dev"
journal_template = {
    "entries": [
        journal_entry(6, 1, secretsProvider={"type": "service", "state": {}}),
        journal_entry(
            0,
            2,
            1,
            operation={
                "resource": {"urn": STACK_URN, "custom": False, "type": "pulumi:pulumi:Stack"},
                "type": "creating",
            },
        ),
        journal_entry(
            1, 3, 1, state={"urn": STACK_URN, "custom": False, "type": "pulumi:pulumi:Stack"}
        ),
        journal_entry(0, 4, 2, operation={"resource": resource_state("a"), "type": "creating"}),
        journal_entry(1, 5, 2, state=resource_state("a", parent=STACK_URN)),
        journal_entry(1, 6, 3, state=resource_state("b"), removeOld=None, removeNew=2),
        journal_entry(5, 7, 0, newSnapshot=deployment(2)),
    ]
}


@shared_app
@given(bodies(journal_template))
async def test_journal_entries(api: Api, body: Body) -> None:
    update = await started(api, journal=True)
    before = await api.export_bytes(update.stack)
    path = f"{update.path}/journalentries"
    response = await send(api, "PATCH", path, body, lease=update.token)
    if await answer(response, 204) != 204:
        assert await api.export_bytes(update.stack) == before
        return
    # Accepted entries replay: the export and complete answer, never a 5xx.
    await answer(await api.export(update.stack), 200)
    await answer(await api.complete(update), 204)
    await answer(await api.export(update.stack), 200)


@shared_app
@given(bodies({"token": "", "duration": 300}))
async def test_renew_lease(api: Api, body: Body) -> None:
    update = await started(api)
    path = f"{update.path}/renew_lease"
    response = await send(api, "POST", path, body, lease=update.token)
    if await answer(response, 200) == 200:
        renewed = await body_json(response)
        assert renewed["token"] == update.token and isinstance(renewed["tokenExpiration"], int)
    # Either way the lease still works.
    await answer(await api.events(update, [stdout_event(0)]), 204)


@shared_app
@given(bodies({"status": "succeeded"}))
async def test_complete(api: Api, body: Body) -> None:
    update = await started(api)
    response = await send(api, "POST", f"{update.path}/complete", body, lease=update.token)
    state = (await body_json(await api.status(update)))["status"]
    if await answer(response, 204) == 204:
        assert state == json.loads(_plain(body))["status"]
        assert (await api.stack_json(update.stack))["activeUpdate"] == ""
    else:
        assert state == "running"


@shared_app
@given(
    st.sampled_from(["checkpoint", "checkpointverbatim", "checkpointdelta", "journalentries"]),
    st.sampled_from(["events/batch", "renew_lease", "complete"]),
    st.booleans(),
    st.text(string.ascii_letters + string.digits, max_size=20),
)
async def test_a_wrong_lease_is_403_before_the_body_is_read(
    app: quart_typing.TestAppProtocol,
    api: Api,
    patch_route: str,
    post_route: str,
    use_other: bool,
    made_up: str,
) -> None:
    update = await started(api)
    other = await started(api)
    lease = other.token if use_other else "x" + made_up
    for method, route in (("PATCH", patch_route), ("POST", post_route)):
        response = await api.call(
            method, f"{update.path}/{route}", raw=b"[" * 1000, gzip_body=True, lease=lease
        )
        await assert_error(response, 403)
    viewer = api.as_token(await make_token(app, DEFAULT_ORG, Role.VIEWER, "prop-viewer"))
    await assert_error(await viewer.create_update(update.stack), 403)
    await assert_error(await viewer.cancel(update), 403)
