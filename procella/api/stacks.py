"""Stack routes: create, get, list, delete, tags, rename, export, import, history."""

from __future__ import annotations

from typing import Any

from quart import Response, request

from procella import memory
from procella.api import wire
from procella.api.auth import principal, writer_of
from procella.api.body import (
    field,
    parse_json_offloaded,
    read_body,
    read_json,
    read_json_members,
    require_object,
    trim_when_done,
)
from procella.api.context import services
from procella.api.responses import int_arg, json_response, no_content, raw_json_response, stack_ref
from procella.errors import BadRequest, NotFound
from procella.stacks.models import (
    StackRef,
    check_org_name,
    check_project_name,
    check_tag_name,
    check_tag_value,
    check_tags,
)
from procella.state import checkpoints as cp

HISTORY_MAX_PAGE = 1000


async def list_user_stacks() -> Response:
    caller = await principal()
    args = request.args
    tag_name = args.get("tagName") or None
    tag_value = args.get("tagValue") or None
    if tag_value is not None and tag_name is None:
        raise BadRequest("tagValue needs tagName")
    org, project = args.get("organization") or None, args.get("project") or None
    # Filters follow the naming rules: a value no stack can have is a mistake to report.
    page = await services().stacks.list(
        caller,
        args.get("continuationToken") or None,
        org=None if org is None else check_org_name(org),
        project=None if project is None else check_project_name(project),
        tag_name=None if tag_name is None else check_tag_name(tag_name),
        tag_value=None if tag_value is None else check_tag_value(tag_value),
    )
    return json_response(
        {
            "stacks": [wire.stack_summary(row) for row in page.stacks],
            "continuationToken": page.continuation_token,
        }
    )


async def project_exists(org: str, project: str) -> Response:
    caller = await principal()
    check_org_name(org)
    check_project_name(project)
    if not await services().stacks.project_exists(caller, org, project):
        raise NotFound(f"project '{org}/{project}' not found")
    return Response(b"", status=200)


async def create_stack(org: str, project: str) -> Response:
    caller = await writer_of(org, project)
    values, raw = await read_json_members(services().settings.max_inflated_bytes)
    name = field(values, "stackName", str)
    tags = check_tags({} if values.get("tags") is None else values["tags"])
    if values.get("config") is not None:
        raise BadRequest("stacks with remote (ESC) configuration are not supported")
    state = None
    if values.get("state") is not None:
        state = cp.state_of(raw["state"], values["state"])
    await services().stacks.create(caller, stack_ref(org, project, name), tags, state)
    return json_response({})


async def get_stack(org: str, project: str, stack: str) -> Response:
    caller = await principal()
    view = await services().stacks.view(caller, stack_ref(org, project, stack))
    return json_response(wire.stack(view))


async def delete_stack(org: str, project: str, stack: str) -> Response:
    caller = await principal()
    force = request.args.get("force", "false").lower() == "true"
    await services().stacks.delete(caller, stack_ref(org, project, stack), force=force)
    return no_content()


async def update_tags(org: str, project: str, stack: str) -> Response:
    caller = await writer_of(org, project, stack)
    tags = check_tags(await read_json(services().settings.max_inflated_bytes))
    await services().stacks.set_tags(caller, stack_ref(org, project, stack), tags)
    return no_content()


async def rename_stack(org: str, project: str, stack: str) -> Response:
    caller = await writer_of(org, project, stack)
    body = require_object(await read_json(services().settings.max_inflated_bytes))
    new_name = field(body, "newName", str)
    new_project = field(body, "newProject", str, required=False) or project
    await services().stacks.rename(caller, stack_ref(org, project, stack), new_project, new_name)
    return no_content()


async def export_stack(org: str, project: str, stack: str, version: int | None = None) -> Response:
    caller = await principal()
    text = await services().stacks.export(caller, stack_ref(org, project, stack), version)
    if len(text) >= memory.LARGE_BYTES:
        trim_when_done()
    return raw_json_response(text)


async def import_stack(org: str, project: str, stack: str) -> Response:
    caller = await writer_of(org, project, stack)
    ref = stack_ref(org, project, stack)
    data = await read_body(services().settings.max_inflated_bytes)
    state = cp.state_of(data, await parse_json_offloaded(data))
    update_id = await services().stacks.import_state(caller, ref, state)
    return json_response({"updateId": update_id})


async def stack_history(org: str, project: str, stack: str) -> Response:
    caller = await principal()
    page_size = int_arg("pageSize", 100, minimum=1, maximum=HISTORY_MAX_PAGE)
    page = int_arg("page", 1, minimum=1, maximum=2**31)  # page * pageSize must fit 64 bits
    updates = await services().updates.history(
        caller, stack_ref(org, project, stack), page_size, page
    )
    return json_response({"updates": [wire.update_info(u) for u in updates]})


async def latest_update(org: str, project: str, stack: str) -> Response:
    caller = await principal()
    ref: StackRef = stack_ref(org, project, stack)
    updates = await services().updates.history(caller, ref, 1, 1)
    if not updates:
        raise NotFound(f"stack '{ref}' has no updates")
    info: dict[str, Any] = wire.update_info(updates[0])
    return json_response({"info": info})
