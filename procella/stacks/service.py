"""Stacks: create, find, list, tag, rename, delete, and their state (export and import)."""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass

from procella import audit, lifecycle
from procella.auth.models import Principal, Role
from procella.errors import (
    AlreadyExists,
    BadRequest,
    Conflict,
    NotFound,
    StackNotEmpty,
    UpdateConflict,
)
from procella.metadata.base import (
    CheckpointRecord,
    Connection,
    MetadataStore,
    StackRecord,
    StackSummaryRow,
    UniqueViolation,
    UpdateRecord,
)
from procella.metadata.queries import auth as auth_q
from procella.metadata.queries import checkpoints as checkpoint_q
from procella.metadata.queries import new_id
from procella.metadata.queries import stacks as stack_q
from procella.metadata.queries import updates as update_q
from procella.stacks.models import (
    StackRef,
    check_org_name,
    check_project_name,
    check_stack_name,
    is_storable_text,
)
from procella.stacks.rename import rename_deployment
from procella.state import checkpoints as cp
from procella.state.states import States
from procella.state.texts import StoredText

LIST_PAGE_SIZE = 100
CONFLICT_MESSAGE = "Another update is currently in progress."


@dataclass(frozen=True)
class StackView:
    """A stack with everything ``GET STACK`` shows."""

    record: StackRecord
    tags: dict[str, str]
    running_kind: str | None = None
    running_author: str | None = None
    running_started_at: int | None = None


@dataclass(frozen=True)
class StackPage:
    stacks: list[StackSummaryRow]
    continuation_token: str | None


def stack_not_found(ref: StackRef) -> NotFound:
    return NotFound(f"Stack '{ref}' not found")


async def free_if_abandoned(conn: Connection, stack_id: str) -> UpdateRecord | None:
    """Free the stack from a running update whose CLI died (``lifecycle.abandon``: its
    lease expired), as the garbage collector would a little later; return the update that
    still holds the stack, if one does. The caller holds the stack row."""
    running = await update_q.running_for_stack(conn, stack_id)
    if running is None:
        return None
    abandoned = lifecycle.abandon(running.lifecycle)
    if abandoned is None:
        return running  # its lease is live
    await update_q.end(conn, stack_id, running.lifecycle, abandoned)
    return None


class StackService:
    def __init__(self, meta: MetadataStore, states: States) -> None:
        self.meta = meta
        self.states = states
        self.texts = states.texts

    # Lookups -------------------------------------------------------------------------

    async def resolve(self, principal: Principal, ref: StackRef, needed: Role) -> StackRecord:
        """The stack at ``ref`` if the caller's role on it is at least ``needed``."""
        principal.require_stack(ref.org, ref.project, ref.stack, needed)
        async with self.meta.read() as conn:
            stack = await stack_q.get(conn, ref.org, ref.project, ref.stack)
        if stack is None:
            raise stack_not_found(ref)
        return stack

    async def view(self, principal: Principal, ref: StackRef) -> StackView:
        principal.require_stack(ref.org, ref.project, ref.stack, Role.VIEWER)
        async with self.meta.read() as conn:
            found = await stack_q.view(conn, ref.org, ref.project, ref.stack)
        if found is None:
            raise stack_not_found(ref)
        if found.running is None:
            return StackView(found.stack, found.tags)
        return StackView(found.stack, found.tags, *found.running)

    async def project_exists(self, principal: Principal, org: str, project: str) -> bool:
        principal.require_member(org)
        if not principal.sees_project(org, project):
            return False  # a project none of whose stacks the caller may read
        async with self.meta.read() as conn:
            return await stack_q.project_exists(conn, org, project)

    async def list(
        self,
        principal: Principal,
        token: str | None,
        *,
        org: str | None = None,
        project: str | None = None,
        tag_name: str | None = None,
        tag_value: str | None = None,
    ) -> StackPage:
        """A page of the stacks the caller may read (``GET /api/user/stacks``), narrowed by
        the filters that are not None, after the page that ``token`` names."""
        f = stack_q.StackFilter(
            member_user_id=None if principal.site_admin else principal.user_id,
            team_id=None if principal.team is None else principal.team.id,
            org=org,
            project=project,
            tag_name=tag_name,
            tag_value=tag_value,
        )
        after = _decode_page_token(token) if token else None
        async with self.meta.read() as conn:
            rows = await stack_q.list_page(conn, f, after, LIST_PAGE_SIZE + 1)
        more = len(rows) > LIST_PAGE_SIZE
        rows = rows[:LIST_PAGE_SIZE]
        next_token = _encode_page_token(rows[-1]) if more else None
        return StackPage(rows, next_token)

    # Changes -------------------------------------------------------------------------

    async def create(
        self, principal: Principal, ref: StackRef, tags: dict[str, str], state: cp.State | None
    ) -> StackRecord:
        """Create a stack; ``state`` (an initial deployment) becomes version 0."""
        check_project_name(ref.project)
        check_stack_name(ref.stack)
        principal.require_project(ref.org, ref.project, Role.MEMBER)
        stack_id = new_id()
        stored = None if state is None else await self.texts.store(stack_id, state.text)
        async with self.meta.transaction() as conn:
            org_id = await auth_q.org_id(conn, ref.org)
            if org_id is None:
                # Only site administrators get here for an org that does not exist yet.
                org_id = await auth_q.ensure_org(conn, check_org_name(ref.org))
            try:
                await stack_q.insert(conn, stack_id, org_id, ref.project, ref.stack)
            except UniqueViolation:
                raise AlreadyExists(f"stack '{ref}' already exists") from None
            await stack_q.replace_tags(conn, stack_id, tags)
            if state is not None and stored is not None:
                await checkpoint_q.put(conn, stack_id, 0, None, stored, state.resource_count)
            await audit.record_on_stack(
                conn, stack_id, principal, audit.STACK_CREATE, f"created stack {ref}"
            )
            stack = await stack_q.get_by_id(conn, stack_id)
        assert stack is not None
        return stack

    async def delete(self, principal: Principal, ref: StackRef, *, force: bool) -> None:
        principal.require_stack(ref.org, ref.project, ref.stack, Role.ADMIN)
        if not force:
            # A journal's resources count only once its state is stored.
            found = await self.resolve(principal, ref, Role.ADMIN)
            await self.states.settle_stack(found.id)
        async with self.meta.transaction() as conn:
            stack = await _locked(conn, ref)
            if not force:
                if await free_if_abandoned(conn, stack.id) is not None:
                    raise UpdateConflict(CONFLICT_MESSAGE)
                latest = await checkpoint_q.latest_summary(conn, stack.id)
                if latest is not None and latest.resource_count > 0:
                    raise StackNotEmpty("Bad Request: Stack still contains resources.")
            how = " (forced)" if force else ""
            await audit.record(
                conn,
                stack.org_id,
                principal,
                audit.STACK_DELETE,
                f"{stack.project}/{stack.name}",
                f"deleted stack {ref}{how}",
            )
            await stack_q.delete(conn, stack.id)
        # Its texts are never read again here (other replicas evict theirs in time).
        self.states.texts.cache.forget(stack.id)

    async def set_tags(self, principal: Principal, ref: StackRef, tags: dict[str, str]) -> None:
        principal.require_stack(ref.org, ref.project, ref.stack, Role.MEMBER)
        async with self.meta.transaction() as conn:
            stack = await _locked(conn, ref)
            await stack_q.replace_tags(conn, stack.id, tags)
            names = ", ".join(sorted(tags)) or "none"
            await audit.record_on_stack(
                conn, stack.id, principal, audit.STACK_TAGS, f"set the tags of {ref}: {names}"
            )

    async def rename(
        self, principal: Principal, ref: StackRef, new_project: str, new_name: str
    ) -> None:
        """Rename (and maybe move to another project), as the CLI's file backend does.

        The state names the stack twice over: in every resource URN, and in the "service"
        secrets provider the CLI calls to decrypt. So the current state is rewritten for
        the new name (``procella.stacks.rename``) as a new version, recorded in the
        history as a ``rename``.
        """
        check_project_name(new_project)
        check_stack_name(new_name)
        new_ref = StackRef(ref.org, new_project, new_name)
        stack = await self.resolve(principal, ref, Role.MEMBER)
        if new_project != ref.project:
            # Moving a stack is creating one in the other project: that needs the same right.
            principal.require_project(ref.org, new_project, Role.MEMBER)
        if new_ref == ref:
            return
        await self.states.settle_stack(stack.id)
        async with self.meta.read() as conn:
            if await update_q.running_for_stack(conn, stack.id) is not None:
                raise UpdateConflict(CONFLICT_MESSAGE)  # its checkpoints would race ours
            latest = await checkpoint_q.latest(conn, stack.id)
        stored: StoredText | None = None
        if latest is not None:
            text = await self.states.load(latest)
            renamed = await asyncio.to_thread(_renamed_state, text, ref, new_ref)
            stored = await self.texts.store(stack.id, renamed)
        async with self.meta.transaction() as conn:
            locked = await _locked(conn, ref)
            if await free_if_abandoned(conn, stack.id) is not None:
                raise UpdateConflict(CONFLICT_MESSAGE)
            # The state rewritten above must still be the current one: an update that was
            # ending meanwhile may have saved a newer checkpoint under the same version.
            current = await checkpoint_q.latest_summary(conn, stack.id)
            if locked.id != stack.id or _identity(current) != _identity(latest):
                raise Conflict("the stack changed during the rename; try again")
            try:
                await stack_q.rename(conn, stack.id, new_project, new_name)
            except UniqueViolation:
                raise AlreadyExists(f"stack '{new_ref}' already exists") from None
            if latest is not None and stored is not None:
                version = await stack_q.next_version(conn, stack.id)
                await self._put_state(
                    conn, locked, version, "rename", principal, stored, latest.resource_count
                )
            await audit.record_on_stack(
                conn, stack.id, principal, audit.STACK_RENAME, f"renamed stack {ref} to {new_ref}"
            )

    async def import_state(self, principal: Principal, ref: StackRef, state: cp.State) -> str:
        """Make ``state`` the stack's state; return the id of the ``import`` history entry."""
        stack = await self.resolve(principal, ref, Role.MEMBER)
        stored = await self.texts.store(stack.id, state.text)
        async with self.meta.transaction() as conn:
            locked = await _locked(conn, ref)
            if locked.id != stack.id:
                raise Conflict("the stack changed during the import; try again")
            if await free_if_abandoned(conn, stack.id) is not None:
                raise UpdateConflict(CONFLICT_MESSAGE)
            version = await stack_q.next_version(conn, stack.id)
            await audit.record_on_stack(
                conn,
                stack.id,
                principal,
                audit.STACK_IMPORT,
                f"imported a state of {state.resource_count} resources into {ref}",
            )
            return await self._put_state(
                conn, locked, version, "import", principal, stored, state.resource_count
            )

    async def _put_state(
        self,
        conn: Connection,
        stack: StackRecord,
        version: int,
        kind: str,
        principal: Principal,
        stored: StoredText,
        resource_count: int,
    ) -> str:
        """Record a state change that completed at once, as a history entry."""
        update_id = await update_q.insert_finished(
            conn, stack.id, kind, version, principal.login, resource_count
        )
        await checkpoint_q.put(conn, stack.id, version, update_id, stored, resource_count)
        await stack_q.record_update_time(conn, stack.id)
        return update_id

    async def record(
        self, principal: Principal, stack: StackRecord, action: str, description: str
    ) -> None:
        """An audit entry on the stack for an action that changed nothing else."""
        async with self.meta.transaction() as conn:
            await audit.record_on_stack(conn, stack.id, principal, action, description)

    # State -----------------------------------------------------------------------------

    async def export(
        self, principal: Principal, ref: StackRef, version: int | None = None
    ) -> bytes:
        """The stack's state (as of ``version``), exactly as it was stored."""
        stack = await self.resolve(principal, ref, Role.VIEWER)
        if version is not None and not 0 <= version <= stack.version:
            raise NotFound(f"stack '{ref}' has no version {version}")
        text = (await self.states.text(stack.id, at_most=version)).text
        return await asyncio.to_thread(cp.readable_text, text)


def _identity(
    record: CheckpointRecord | checkpoint_q.CheckpointSummary | None,
) -> tuple[int, str] | None:
    return None if record is None else (record.version, record.sha256)


async def _locked(conn: Connection, ref: StackRef) -> StackRecord:
    stack = await stack_q.get(conn, ref.org, ref.project, ref.stack, lock=True)
    if stack is None:
        raise stack_not_found(ref)
    return stack


def _renamed_state(text: bytes, old: StackRef, new: StackRef) -> bytes:
    wrapper = cp.parse_deployment(text)
    rename_deployment(wrapper, (old.org, old.project, old.stack), (new.org, new.project, new.stack))
    return json.dumps(wrapper, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _encode_page_token(row: StackSummaryRow) -> str:
    raw = json.dumps([row.org, row.project, row.name], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_page_token(token: str) -> tuple[str, str, str]:
    try:
        value = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError):
        raise BadRequest("invalid continuationToken") from None
    if not (
        isinstance(value, list)
        and len(value) == 3
        and all(isinstance(v, str) and is_storable_text(v) for v in value)
    ):
        raise BadRequest("invalid continuationToken")
    return (value[0], value[1], value[2])
