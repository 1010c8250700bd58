"""One update or preview: who, when, how long, its changes, and its engine events as the CLI
prints them. While it runs, the page polls ``…/events?after=<sequence>`` (plain JS), which
any replica answers from the database, until the update ends."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from typing import Any

from quart import Response, render_template

from procella import lifecycle
from procella.api.context import services
from procella.api.responses import check_update_id, stack_ref
from procella.console import events as ev
from procella.console import session
from procella.console.pages import int_arg
from procella.console.reads import ConsoleReads
from procella.console.state import MASK, is_secret, masked
from procella.metadata.base import UpdateRecord
from procella.stacks.models import StackRef

# Events read per query, and at most per page (a huge update links to the next page).
EVENT_BATCH = 500
EVENTS_PER_PAGE = 5000


def is_live(update: UpdateRecord) -> bool:
    """Still producing events: started, not ended, and its lease not expired."""
    return update.status in (lifecycle.RUNNING, lifecycle.NOT_STARTED) and update.ended_at is None


async def update_page(org: str, project: str, stack: str, version: int) -> str:
    me = await session.principal()
    ref = stack_ref(org, project, stack)
    update = await ConsoleReads(services()).update_at(me, ref, version)
    return await _render(ref, update)


async def preview_page(org: str, project: str, stack: str, update_id: str) -> str:
    me = await session.principal()
    ref = stack_ref(org, project, stack)
    update = await services().updates.get(me, ref, check_update_id(update_id))
    return await _render(ref, update)


async def update_events(org: str, project: str, stack: str, version: int) -> Response:
    me = await session.principal()
    ref = stack_ref(org, project, stack)
    update = await ConsoleReads(services()).update_at(me, ref, version)
    return await _events_json(ref, update)


async def preview_events(org: str, project: str, stack: str, update_id: str) -> Response:
    me = await session.principal()
    ref = stack_ref(org, project, stack)
    update = await services().updates.get(me, ref, check_update_id(update_id))
    return await _events_json(ref, update)


async def _read_events(
    ref: StackRef, update: UpdateRecord, after: int, most: int
) -> tuple[UpdateRecord, list[tuple[int, str]]]:
    me = await session.principal()
    found: list[tuple[int, str]] = []
    while len(found) < most:
        update, batch = await services().updates.events(
            me, ref, update.id, after, min(EVENT_BATCH, most - len(found))
        )
        found.extend(batch)
        if len(batch) < EVENT_BATCH:
            break
        after = batch[-1][0]
    return update, found


async def _render(ref: StackRef, update: UpdateRecord) -> str:
    after = int_arg("after", 0)
    update, found = await _read_events(ref, update, after, EVENTS_PER_PAGE)
    summary = ev.Summary()
    lines = await asyncio.to_thread(
        ev.render, [text for _, text in found], update.is_preview, summary
    )
    last = found[-1][0] if found else after
    changes = summary.changes or _stored_changes(update)
    return await render_template(
        "update.html",
        ref=ref,
        update=update,
        lines=lines,
        summary=summary,
        change_lines=ev.change_lines(changes or {}),
        duration=_duration(update, summary),
        live=is_live(update),
        last_sequence=last,
        more=len(found) >= EVENTS_PER_PAGE,
        message=_message(update),
        outputs=_output_lines(summary.outputs or {}),
    )


async def _events_json(ref: StackRef, update: UpdateRecord) -> Response:
    """New lines after ``after``, and whether the update has ended (the page then reloads
    once, for the final summary)."""
    after = int_arg("after", 0)
    update, found = await _read_events(ref, update, after, EVENT_BATCH)
    lines = ev.render([text for _, text in found], update.is_preview, ev.Summary())
    body: dict[str, Any] = {
        "lines": [asdict(line) for line in lines],
        "after": found[-1][0] if found else after,
        "done": not is_live(update),
        "status": update.status,
    }
    return Response(json.dumps(body), content_type="application/json")


def _output_lines(outputs: dict[str, Any]) -> list[str]:
    """The "Outputs:" block as the CLI prints it: ``name: value``, secrets as [secret]."""
    return [
        f"{name}: {MASK if is_secret(value) else json.dumps(masked(value))}"
        for name, value in sorted(outputs.items())
    ]


def _stored_changes(update: UpdateRecord) -> dict[str, int] | None:
    if not update.resource_changes:
        return None
    try:
        found = json.loads(update.resource_changes)
    except ValueError:
        return None
    return {str(k): int(v) for k, v in found.items()} if isinstance(found, dict) else None


def _duration(update: UpdateRecord, summary: ev.Summary) -> str:
    if summary.duration_seconds is not None:
        return ev.duration(summary.duration_seconds)
    if update.started_at is not None and update.ended_at is not None:
        return ev.duration((update.ended_at - update.started_at) // 1000)
    return ""


def _message(update: UpdateRecord) -> str:
    try:
        found = json.loads(update.metadata or "{}")
    except ValueError:
        return ""
    return str(found.get("message", "")) if isinstance(found, dict) else ""
