"""What the console reads, authorized exactly as the API authorizes it.

Each method checks the caller through the same services the API routes use
(``StackService.resolve``/``view``/``list``, ``UpdateService.get``/``events``/``history``),
so a viewer sees what the API shows a viewer, and an outsider gets the API's 404.
"""

from __future__ import annotations

from dataclasses import dataclass

from procella.auth.models import Principal, Role
from procella.errors import NotFound
from procella.metadata.base import StackSummaryRow, UpdateRecord
from procella.metadata.queries import console as console_q
from procella.services import Services
from procella.stacks.models import StackRef

# With a search, at most this many pages of the org's stacks are read for one page of hits.
_SEARCH_PAGES = 50
PAGE_SIZE = 100


@dataclass(frozen=True)
class OrgStack:
    row: StackSummaryRow
    tags: dict[str, str]
    last: UpdateRecord | None


@dataclass(frozen=True)
class OrgPage:
    stacks: list[OrgStack]
    next_token: str | None


class ConsoleReads:
    def __init__(self, services: Services) -> None:
        self.s = services

    async def org_stacks(
        self,
        principal: Principal,
        org: str,
        *,
        project: str | None,
        tag_name: str | None,
        tag_value: str | None,
        search: str,
        token: str | None,
    ) -> OrgPage:
        """A page of the org's stacks (as ``GET /api/user/stacks?organization=``), with
        each one's tags and newest update; ``search`` keeps those whose project or name
        contains it."""
        principal.require_member(org)
        rows: list[StackSummaryRow] = []
        needle = search.lower()
        for _ in range(_SEARCH_PAGES if needle else 1):
            # GET /api/user/stacks: only the stacks the caller may read.
            page = await self.s.stacks.list(
                principal, token, org=org, project=project, tag_name=tag_name, tag_value=tag_value
            )
            rows.extend(r for r in page.stacks if needle in f"{r.project}/{r.name}".lower())
            token = page.continuation_token
            if token is None or len(rows) >= PAGE_SIZE:
                break
        ids = [r.id for r in rows]
        async with self.s.meta.read() as conn:
            last = await console_q.latest_updates(conn, ids)
            tags = await console_q.tags_of(conn, ids)
        stacks = [OrgStack(r, tags.get(r.id, {}), last.get(r.id)) for r in rows]
        return OrgPage(stacks, token)

    async def update_at(self, principal: Principal, ref: StackRef, version: int) -> UpdateRecord:
        """The update that made ``version`` of the stack (the CLI's ``…/updates/<version>``)."""
        stack = await self.s.stacks.resolve(principal, ref, Role.VIEWER)
        async with self.s.meta.read() as conn:
            found = await console_q.update_at_version(conn, stack.id, version)
        if found is None:
            raise NotFound(f"stack '{ref}' has no update {version}")
        return found

    async def previews(self, principal: Principal, ref: StackRef, limit: int) -> list[UpdateRecord]:
        stack = await self.s.stacks.resolve(principal, ref, Role.VIEWER)
        async with self.s.meta.read() as conn:
            return await console_q.recent_previews(conn, stack.id, limit)
