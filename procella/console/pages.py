"""The org page, the stack page (outputs, config, tags, resources, history), a resource's
page, and the diff between two versions of a stack's state."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from typing import Any

from quart import redirect, render_template, request, url_for
from werkzeug.wrappers.response import Response as Redirect

from procella.api.context import services
from procella.api.responses import stack_ref
from procella.auth.models import Principal, Role
from procella.console import session
from procella.console import state as st
from procella.console.reads import ConsoleReads
from procella.errors import BadRequest, Forbidden, NotFound
from procella.stacks.models import StackRef, check_org_name, check_project_name, check_tag_name

RESOURCES_PER_PAGE = 200
CHANGES_PER_PAGE = 200
HISTORY_ROWS = 20
PREVIEW_ROWS = 10


def int_arg(name: str, default: int, minimum: int = 0) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a whole number") from None
    if value < minimum or value > 2**31:
        raise BadRequest(f"{name} must be between {minimum} and {2**31}")
    return value


async def org_page(org: str) -> str:
    me = await session.principal()
    check_org_name(org)
    project = request.args.get("project") or None
    tag = request.args.get("tag") or ""  # name or name=value
    tag_name, _, tag_value = tag.partition("=")
    found = await ConsoleReads(services()).org_stacks(
        me,
        org,
        project=None if project is None else check_project_name(project),
        tag_name=check_tag_name(tag_name) if tag_name else None,
        tag_value=tag_value or None,
        search=request.args.get("q", "")[:100],
        token=request.args.get("continuationToken") or None,
    )
    return await render_template("org.html", org=org, page=found, project=project or "", tag=tag)


async def project_page(org: str, project: str) -> Redirect:
    check_org_name(org)
    check_project_name(project)
    return redirect(url_for("console.org_page_GET", org=org, project=project))


async def _resources(me: Principal, ref: StackRef, version: int | None) -> list[dict[str, Any]]:
    text = await services().stacks.export(me, ref, version)
    return await asyncio.to_thread(st.parse, text)


async def stack_page(org: str, project: str, stack: str) -> str:
    return await _render_stack(org, project, stack, {})


async def _render_stack(org: str, project: str, stack: str, revealed: dict[str, str]) -> str:
    me = await session.principal()
    ref = stack_ref(org, project, stack)
    s = services()
    view = await s.stacks.view(me, ref)
    history = await s.updates.history(me, ref, HISTORY_ROWS, 1)
    previews = await ConsoleReads(s).previews(me, ref, PREVIEW_ROWS)
    resources = await _resources(me, ref, None)
    tree = await asyncio.to_thread(st.tree, resources)
    page = int_arg("page", 1, minimum=1)
    pages = max(1, -(-len(tree) // RESOURCES_PER_PAGE))
    shown = tree[(page - 1) * RESOURCES_PER_PAGE : page * RESOURCES_PER_PAGE]
    outputs = st.stack_outputs(resources)
    config = _config(history[0].config if history else "{}")
    return await render_template(
        "stack.html",
        ref=ref,
        view=view,
        history=history,
        previews=previews,
        resources=shown,
        resource_count=len(tree),
        page=page,
        pages=pages,
        outputs=outputs,
        revealed=revealed,
        may_reveal=await _may_decrypt(me, ref),
        config=config,
        st=st,
    )


async def _may_decrypt(me: Principal, ref: StackRef) -> bool:
    """Whether the secrets service would decrypt for ``me`` (it resolves the stack with the
    member role): only then is a Reveal button shown."""
    try:
        await services().stacks.resolve(me, ref, Role.MEMBER)
    except Forbidden:
        return False
    return True


def _config(text: str) -> list[tuple[str, str, bool]]:
    """The config of the newest update: (key, value or "[secret]", secret?)."""
    try:
        found = json.loads(text)
    except ValueError:
        return []
    rows = []
    for key, value in sorted(found.items() if isinstance(found, dict) else []):
        secret = isinstance(value, dict) and bool(value.get("secret"))
        shown = (
            st.MASK
            if secret
            else str(value.get("string", "") if isinstance(value, dict) else value)
        )
        rows.append((str(key), shown, secret))
    return rows


async def reveal_output(org: str, project: str, stack: str) -> str:
    """Decrypt one secret output, through the secrets service: refused below member, and
    recorded in the audit log as a decryption."""
    me = await session.principal()
    form = await request.form
    session.check_csrf(form.get("csrf"))
    ref = stack_ref(org, project, stack)
    name = form.get("name") or ""
    value = st.stack_outputs(await _resources(me, ref, None)).get(name)
    sealed = st.ciphertext(value)
    if sealed is None:
        raise NotFound(f"stack '{ref}' has no secret output {name!r}")
    try:
        raw = base64.b64decode(sealed, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"output {name!r} is not a ciphertext of this server") from None
    plain = (await services().secrets.decrypt(me, ref, [raw]))[0]
    return await _render_stack(org, project, stack, {name: plain.decode("utf-8", "replace")})


async def resource_page(org: str, project: str, stack: str, urn: str) -> str:
    me = await session.principal()
    ref = stack_ref(org, project, stack)
    version = request.args.get("version")
    at = None if version is None else int_arg("version", 0)
    resources = await _resources(me, ref, at)
    found = next((r for r in resources if r.get("urn") == urn), None)
    if found is None:
        raise NotFound(f"stack '{ref}' has no resource {urn!r}")
    children = [str(r.get("urn")) for r in resources if r.get("parent") == urn]
    return await render_template(
        "resource.html",
        ref=ref,
        urn=urn,
        r=st.tree([found])[0],
        inputs=st.pretty(found.get("inputs") or {}),
        outputs=st.pretty(found.get("outputs") or {}),
        children=children,
        version=at,
        st=st,
    )


async def diff_page(org: str, project: str, stack: str) -> str:
    me = await session.principal()
    ref = stack_ref(org, project, stack)
    view = await services().stacks.view(me, ref)
    latest = view.record.version
    to = int_arg("to", latest)
    since = int_arg("from", max(0, to - 1))
    if not (0 <= since <= latest and 0 <= to <= latest):
        raise NotFound(f"stack '{ref}' has versions 0 to {latest}")
    old, new = await asyncio.gather(_resources(me, ref, since), _resources(me, ref, to))
    changes = await asyncio.to_thread(st.diff, old, new)
    page = int_arg("page", 1, minimum=1)
    pages = max(1, -(-len(changes) // CHANGES_PER_PAGE))
    return await render_template(
        "diff.html",
        ref=ref,
        since=since,
        to=to,
        latest=latest,
        changes=changes[(page - 1) * CHANGES_PER_PAGE : page * CHANGES_PER_PAGE],
        change_count=len(changes),
        page=page,
        pages=pages,
        st=st,
    )


async def no_such_page(org: str, rest: str) -> str:
    raise NotFound(f"there is no console page at /{org}/{rest}")
