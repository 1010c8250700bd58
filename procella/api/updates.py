"""Update routes: the lifecycle (user token) and the lease-holder calls (update token)."""

from __future__ import annotations

import asyncio
import functools
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeGuard, TypeVar

from quart import Response, request

from procella import logs, strictjson
from procella.api import wire
from procella.api.auth import principal, update_token, writer_of
from procella.api.body import (
    INT64,
    OFFLOAD_BYTES,
    checkpoint_members,
    field,
    parse_json_offloaded,
    parse_object_members,
    read_body,
    read_json,
    require_object,
    trim_when_done,
)
from procella.api.context import services
from procella.api.responses import check_update_id, int_arg, json_response, no_content, stack_ref
from procella.errors import BadRequest, PayloadTooLarge
from procella.metadata.base import UpdateRecord
from procella.stacks.models import check_tags
from procella.state import checkpoints as cp
from procella.state import journal, pieces
from procella.updates.service import Event

_T = TypeVar("_T")

EVENTS_PAGE = 500
DEFAULT_LEASE_SECONDS = 300  # what the CLI asks for
MAX_EVENTS_PER_BATCH = 1000
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_EVENT_KIND = re.compile(r"[A-Za-z]{1,64}Event")
# The CLI's User-Agent: "pulumi-cli/1 (v3.276.0; linux)".
_CLI_VERSION = re.compile(r"pulumi-cli/\S+ \((v[0-9A-Za-z.+-]{1,40});")


def _max_inflated() -> int:
    return services().settings.max_inflated_bytes


# User-token calls --------------------------------------------------------------------


async def create_update(org: str, project: str, stack: str, kind: str) -> Response:
    caller = await writer_of(org, project, stack)
    new = wire.new_update(kind, await read_json(_max_inflated()))
    update_id = await services().updates.create(caller, stack_ref(org, project, stack), new)
    return json_response({"updateID": update_id, "aiSettings": {"copilotIsEnabled": False}})


async def start_update(org: str, project: str, stack: str, kind: str, update_id: str) -> Response:
    caller = await writer_of(org, project, stack)
    check_update_id(update_id)
    obj = require_object(await read_json(_max_inflated(), empty={}))
    tags = field(obj, "tags", dict, required=False)
    # The CLI asks for the newest journal format it knows (v3.276.0 asks for 2, which adds
    # state-migration entries) and takes 1 for an answer; 0 makes it send checkpoints.
    wants_journal = (field(obj, "journalVersion", int, required=False) or 0) >= 1
    lease = await services().updates.start(
        caller,
        stack_ref(org, project, stack),
        update_id,
        None if tags is None else check_tags(tags),
        wants_journal=wants_journal,
        client_version=_client_version(),
    )
    return json_response(
        {
            "version": lease.version,
            "token": lease.token,
            "tokenExpiration": wire.seconds(lease.expires_at_ms),
            "journalVersion": lease.journal_version,
        }
    )


def _client_version() -> str:
    match = _CLI_VERSION.match(request.headers.get("User-Agent", ""))
    return "" if match is None else match.group(1)


async def update_status(org: str, project: str, stack: str, kind: str, update_id: str) -> Response:
    caller = await principal()
    check_update_id(update_id)
    update = await services().updates.get(caller, stack_ref(org, project, stack), update_id)
    return json_response(wire.update_status(update))


async def cancel_update(org: str, project: str, stack: str, kind: str, update_id: str) -> Response:
    caller = await principal()
    check_update_id(update_id)
    await services().updates.cancel(caller, stack_ref(org, project, stack), update_id)
    return no_content()


async def list_events(org: str, project: str, stack: str, kind: str, update_id: str) -> Response:
    caller = await principal()
    check_update_id(update_id)
    after = int_arg("continuationToken", -1, minimum=-1)
    update, rows = await services().updates.events(
        caller, stack_ref(org, project, stack), update_id, after, EVENTS_PAGE
    )
    more = len(rows) == EVENTS_PAGE or update.ended_at is None
    token = str(rows[-1][0] if rows else after) if more else None
    body = '{"events":[' + ",".join(strictjson.standard_json(text) for _, text in rows) + "],"
    body += '"continuationToken":' + json.dumps(token) + "}"
    return Response(body, status=200, content_type="application/json")


# Update-token calls -------------------------------------------------------------------
# Each checks the lease before it reads the body: without one, nothing is inflated or parsed.


async def _lease_holder(
    org: str, project: str, stack: str, update_id: str, *, live: bool = True
) -> tuple[UpdateRecord, str]:
    """The update and the caller's token, if the token is the update's lease (and, with
    ``live``, the lease has not ended)."""
    token = update_token()
    check_update_id(update_id)
    updates = services().updates
    ref = stack_ref(org, project, stack)
    check = updates.authorize if live else updates.identify
    update = await check(ref, update_id, token)
    logs.note(login=update.created_by)  # the lease is the CLI of whoever created the update
    return update, token


async def renew_lease(org: str, project: str, stack: str, kind: str, update_id: str) -> Response:
    update, token = await _lease_holder(org, project, stack, update_id)
    body = require_object(await read_json(_max_inflated()))
    duration = field(body, "duration", int, required=False)
    if duration is None:
        duration = DEFAULT_LEASE_SECONDS
    if duration < 1:
        raise BadRequest("duration must be a positive number of seconds")
    expires = await services().updates.renew(update, token, duration)
    return json_response({"token": token, "tokenExpiration": wire.seconds(expires)})


async def patch_checkpoint(
    org: str, project: str, stack: str, kind: str, update_id: str
) -> Response:
    update, token = await _lease_holder(org, project, stack, update_id)
    await _save_checkpoint("deployment", functools.partial(_save_full, update, token))
    return no_content()


async def _save_checkpoint(member: str, save: Callable[..., Awaitable[None]]) -> None:
    """``save(values, raw member, checked=...)`` a checkpoint body: read without parsing
    ``member`` (its text is checked in pieces while saved), or, if that reading refuses
    it, parsed whole, which decides."""
    data = await read_body(_max_inflated())
    fast = await _offloaded(checkpoint_members, data, member)
    if fast is not None:
        try:
            await save(*fast, checked=False)
            return
        except pieces.InvalidText:
            pass  # perhaps another reading of the body: the whole parse decides
    values, raw = await _offloaded(_whole_members, data)
    await save(values, raw.get(member, b""), checked=True)


async def _save_full(
    update: UpdateRecord,
    token: str,
    values: dict[str, Any],
    deployment: bytes | memoryview,
    *,
    checked: bool,
) -> None:
    if field(values, "isInvalid", bool, required=False):
        raise BadRequest("a checkpoint marked invalid is not stored")
    version = field(values, "version", int)
    features = cp.check_schema(version, values.get("features"))
    if not checked and deployment[:1] != b"{":
        raise BadRequest("field 'deployment' must be a JSON object")
    if checked and not isinstance(values.get("deployment"), dict):
        raise BadRequest("field 'deployment' must be a JSON object")
    # The CLI sends the inner deployment; the stored text is the wrapper around its bytes,
    # as deep as the body (one level for the wrapper, one for the body).
    text = cp.wrap_deployment(version, features, deployment)
    # Parsed, the wrapper must have just its own members: the deployment was one value.
    members = 3 if features else 2
    check = None if checked else pieces.TextCheck(strictjson.MAX_DEPTH, _no_schema_check, members)
    await services().updates.save_full(update, token, text, check)


def _no_schema_check(skeleton: Any) -> None:
    """The wrapper's version and features came from the body's own members, checked."""


async def patch_checkpoint_verbatim(
    org: str, project: str, stack: str, kind: str, update_id: str
) -> Response:
    update, token = await _lease_holder(org, project, stack, update_id)
    await _save_checkpoint("untypedDeployment", functools.partial(_save_verbatim, update, token))
    return no_content()


async def _save_verbatim(
    update: UpdateRecord,
    token: str,
    values: dict[str, Any],
    raw: bytes | memoryview,
    *,
    checked: bool,
) -> None:
    if checked and "untypedDeployment" not in values:
        raise BadRequest("missing field 'untypedDeployment'")
    version = field(values, "version", int)
    sequence = _sequence_number(values)

    def check_schema(untyped: Any) -> None:
        cp.check_untyped_deployment(untyped)
        if untyped["version"] != version:
            raise BadRequest("version does not match untypedDeployment.version")

    if checked:
        check_schema(values["untypedDeployment"])
    # The body holds the text one level down.
    check = None if checked else pieces.TextCheck(strictjson.MAX_DEPTH - 1, check_schema)
    text = bytes(raw)
    await services().updates.save_verbatim(update, token, sequence, text, check)


def _whole_members(data: bytes) -> tuple[dict[str, Any], dict[str, bytes]]:
    members = parse_object_members(data)
    values = {key: value for key, (value, _) in members.items()}
    return values, {key: text for key, (_, text) in members.items()}


async def _offloaded(func: Callable[..., _T], *args: Any) -> _T:
    if len(args[0]) > OFFLOAD_BYTES:
        return await asyncio.to_thread(func, *args)
    return func(*args)


async def patch_checkpoint_delta(
    org: str, project: str, stack: str, kind: str, update_id: str
) -> Response:
    update, token = await _lease_holder(org, project, stack, update_id)
    body = require_object(await read_json(_max_inflated()))
    cp.check_schema(field(body, "version", int), None)
    sequence = _sequence_number(body)
    digest = field(body, "checkpointHash", str)
    if not _SHA256.match(digest):
        raise BadRequest("checkpointHash must be 64 lowercase hex digits")
    edits = cp.parse_text_edits(body.get("deploymentDelta"))
    await services().updates.save_delta(update, token, sequence, digest, edits)
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
    update, token = await _lease_holder(org, project, stack, update_id)
    limit = services().settings.journal_batch_max_bytes
    data = await read_body(min(limit, _max_inflated()))
    if len(data) > limit:
        # The CLI answers 413 by sending the batch again in two halves.
        raise PayloadTooLarge(f"a journal batch may hold at most {limit} bytes")
    body = require_object(await parse_json_offloaded(data))
    raw_entries = field(body, "entries", list, required=False) or []
    entries = [journal.check_entry(entry, i) for i, entry in enumerate(raw_entries)]
    await services().updates.save_journal(update, token, entries)
    return no_content()


async def record_events(org: str, project: str, stack: str, kind: str, update_id: str) -> Response:
    update, _ = await _lease_holder(org, project, stack, update_id)
    body = require_object(await read_json(_max_inflated()))
    raw_events = field(body, "events", list)
    if len(raw_events) > MAX_EVENTS_PER_BATCH:
        raise BadRequest(f"at most {MAX_EVENTS_PER_BATCH} events per batch")
    await services().updates.record_events(update, _parse_events(raw_events))
    return no_content()


def _parse_events(raw_events: list[Any]) -> list[Event]:
    events: dict[int, Event] = {}
    for i, event in enumerate(raw_events):
        if not isinstance(event, dict):
            raise BadRequest(f"events[{i}] must be an object")
        sequence = event.get("sequence")
        if not _is_int64(sequence) or sequence < 0:
            raise BadRequest(f"events[{i}].sequence must be a non-negative 64-bit integer")
        # EngineEvent.Timestamp is a Go int: anything else would break the listing.
        if event.get("timestamp") is not None and not _is_int64(event["timestamp"]):
            raise BadRequest(f"events[{i}].timestamp must be a 64-bit integer")
        kinds = [k for k in event if k.endswith("Event") and event[k] is not None]
        if len(kinds) != 1 or not _EVENT_KIND.fullmatch(kinds[0]):
            raise BadRequest(f"events[{i}] must carry exactly one kind of event")
        if kinds[0] == "summaryEvent":
            _check_summary(event["summaryEvent"], i)
        # A batch may repeat a sequence only as a retry of the same event: keep the first.
        events.setdefault(sequence, Event(sequence, kinds[0], event))
    return list(events.values())


def _is_int64(value: object) -> TypeGuard[int]:
    return type(value) is int and -INT64 <= value < INT64


def _check_summary(summary: Any, i: int) -> None:
    """The summary's resourceChanges end up in `stack history`, which the CLI decodes as
    ``map[OpType]int``: anything else there would break history for good."""
    if not isinstance(summary, dict):
        raise BadRequest(f"events[{i}].summaryEvent must be an object")
    changes = summary.get("resourceChanges")
    if changes is None:
        return
    if not isinstance(changes, dict) or not all(
        isinstance(k, str) and type(v) is int and 0 <= v < INT64 for k, v in changes.items()
    ):
        raise BadRequest(f"events[{i}].summaryEvent.resourceChanges must map names to counts")


async def complete_update(
    org: str, project: str, stack: str, kind: str, update_id: str
) -> Response:
    # Not `live`: a retried complete arrives after the update ended, and must succeed.
    update, _ = await _lease_holder(org, project, stack, update_id, live=False)
    body = require_object(await read_json(_max_inflated()))
    trim_when_done()  # complete parses, or replays, the final state
    await services().updates.complete(update, field(body, "status", str))
    return no_content()
