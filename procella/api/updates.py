"""Update routes: the lifecycle (user token) and the lease-holder calls (update token)."""

from __future__ import annotations

import json
import re
from typing import Any

from quart import Response

from procella.api import wire
from procella.api.auth import principal, update_token
from procella.api.body import INT64, field, read_json, read_json_members, require_object
from procella.api.context import services
from procella.api.responses import int_arg, json_response, no_content, stack_ref
from procella.errors import BadRequest
from procella.stacks.models import check_tags
from procella.updates import checkpoints as cp
from procella.updates.service import Event

EVENTS_PAGE = 500
DEFAULT_LEASE_SECONDS = 300  # what the CLI asks for
MAX_EVENTS_PER_BATCH = 1000
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _max_inflated() -> int:
    return services().settings.max_inflated_bytes


# User-token calls --------------------------------------------------------------------


async def create_update(org: str, project: str, stack: str, kind: str) -> Response:
    caller = await principal()
    new = wire.new_update(kind, await read_json(_max_inflated()))
    update_id = await services().updates.create(caller, stack_ref(org, project, stack), new)
    return json_response({"updateID": update_id, "aiSettings": {"copilotIsEnabled": False}})


async def start_update(org: str, project: str, stack: str, kind: str, update_id: str) -> Response:
    caller = await principal()
    obj = require_object(await read_json(_max_inflated(), empty={}))
    tags = field(obj, "tags", dict, required=False)
    lease = await services().updates.start(
        caller,
        stack_ref(org, project, stack),
        update_id,
        None if tags is None else check_tags(tags),
    )
    # journalVersion 0: the CLI sends checkpoints rather than journal entries.
    return json_response(
        {
            "version": lease.version,
            "token": lease.token,
            "tokenExpiration": wire.seconds(lease.expires_at_ms),
            "journalVersion": 0,
        }
    )


async def update_status(org: str, project: str, stack: str, kind: str, update_id: str) -> Response:
    caller = await principal()
    update = await services().updates.get(caller, stack_ref(org, project, stack), update_id)
    return json_response(wire.update_status(update))


async def cancel_update(org: str, project: str, stack: str, kind: str, update_id: str) -> Response:
    caller = await principal()
    await services().updates.cancel(caller, stack_ref(org, project, stack), update_id)
    return no_content()


async def list_events(org: str, project: str, stack: str, kind: str, update_id: str) -> Response:
    caller = await principal()
    after = int_arg("continuationToken", -1, minimum=-1)
    update, rows = await services().updates.events(
        caller, stack_ref(org, project, stack), update_id, after, EVENTS_PAGE
    )
    more = len(rows) == EVENTS_PAGE or update.ended_at is None
    token = str(rows[-1][0] if rows else after) if more else None
    body = '{"events":[' + ",".join(text for _, text in rows) + "],"
    body += '"continuationToken":' + json.dumps(token) + "}"
    return Response(body, status=200, content_type="application/json")


# Update-token calls -------------------------------------------------------------------


async def renew_lease(org: str, project: str, stack: str, kind: str, update_id: str) -> Response:
    token = update_token()
    body = require_object(await read_json(_max_inflated()))
    duration = field(body, "duration", int, required=False)
    if duration is None:
        duration = DEFAULT_LEASE_SECONDS
    if duration < 1:
        raise BadRequest("duration must be a positive number of seconds")
    expires = await services().updates.renew(
        stack_ref(org, project, stack), update_id, token, duration
    )
    return json_response({"token": token, "tokenExpiration": wire.seconds(expires)})


async def patch_checkpoint(
    org: str, project: str, stack: str, kind: str, update_id: str
) -> Response:
    token = update_token()
    values, raw = await read_json_members(_max_inflated())
    if field(values, "isInvalid", bool, required=False):
        raise BadRequest("a checkpoint marked invalid is not stored")
    version = field(values, "version", int)
    features = cp.check_schema(version, values.get("features"))
    deployment = values.get("deployment")
    if not isinstance(deployment, dict):
        raise BadRequest("field 'deployment' must be a JSON object")
    # The CLI sends the inner deployment; the stored text is the wrapper around its bytes.
    text = cp.wrap_deployment(version, features, raw["deployment"])
    state = cp.State(text, cp.count_resources({"deployment": deployment}))
    await services().updates.save_full(stack_ref(org, project, stack), update_id, token, state)
    return no_content()


async def patch_checkpoint_verbatim(
    org: str, project: str, stack: str, kind: str, update_id: str
) -> Response:
    token = update_token()
    values, raw = await read_json_members(_max_inflated())
    version = field(values, "version", int)
    sequence = _sequence_number(values)
    if "untypedDeployment" not in values:
        raise BadRequest("missing field 'untypedDeployment'")
    untyped = values["untypedDeployment"]
    state = cp.state_of(raw["untypedDeployment"], untyped)
    if untyped["version"] != version:
        raise BadRequest("version does not match untypedDeployment.version")
    await services().updates.save_verbatim(
        stack_ref(org, project, stack), update_id, token, sequence, state
    )
    return no_content()


async def patch_checkpoint_delta(
    org: str, project: str, stack: str, kind: str, update_id: str
) -> Response:
    token = update_token()
    body = require_object(await read_json(_max_inflated()))
    cp.check_schema(field(body, "version", int), None)
    sequence = _sequence_number(body)
    digest = field(body, "checkpointHash", str)
    if not _SHA256.match(digest):
        raise BadRequest("checkpointHash must be 64 lowercase hex digits")
    edits = cp.parse_text_edits(body.get("deploymentDelta"))
    await services().updates.save_delta(
        stack_ref(org, project, stack), update_id, token, sequence, digest, edits
    )
    return no_content()


def _sequence_number(values: dict[str, Any]) -> int:
    sequence = field(values, "sequenceNumber", int)
    if sequence < 1:
        raise BadRequest("sequenceNumber starts at 1")
    assert isinstance(sequence, int)
    return sequence


async def journal_entries(
    org: str, project: str, stack: str, kind: str, update_id: str
) -> Response:
    update_token()
    raise BadRequest("journaling is not enabled on this server (journalVersion 0)")


async def record_events(org: str, project: str, stack: str, kind: str, update_id: str) -> Response:
    token = update_token()
    body = require_object(await read_json(_max_inflated()))
    raw_events = field(body, "events", list)
    if len(raw_events) > MAX_EVENTS_PER_BATCH:
        raise BadRequest(f"at most {MAX_EVENTS_PER_BATCH} events per batch")
    await services().updates.record_events(
        stack_ref(org, project, stack), update_id, token, _parse_events(raw_events)
    )
    return no_content()


def _parse_events(raw_events: list[Any]) -> list[Event]:
    events: dict[int, Event] = {}
    for i, event in enumerate(raw_events):
        if not isinstance(event, dict):
            raise BadRequest(f"events[{i}] must be an object")
        sequence = event.get("sequence")
        if isinstance(sequence, bool) or not isinstance(sequence, int) or not 0 <= sequence < INT64:
            raise BadRequest(f"events[{i}].sequence must be a non-negative 64-bit integer")
        kinds = [k for k in event if k.endswith("Event") and event[k] is not None]
        if len(kinds) != 1:
            raise BadRequest(f"events[{i}] must carry exactly one kind of event")
        # A batch may repeat a sequence only as a retry of the same event: keep the first.
        events.setdefault(sequence, Event(sequence, kinds[0], json.dumps(event)))
    return list(events.values())


async def complete_update(
    org: str, project: str, stack: str, kind: str, update_id: str
) -> Response:
    token = update_token()
    body = require_object(await read_json(_max_inflated()))
    status = field(body, "status", str)
    await services().updates.complete(stack_ref(org, project, stack), update_id, token, status)
    return no_content()
