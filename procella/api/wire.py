"""Pulumi's JSON shapes (sdk/go/common/apitype), to and from our records.

Services never see these dicts; handlers convert on the way in and out.
"""

from __future__ import annotations

from typing import Any

from procella import strictjson
from procella.api.body import field, require_object
from procella.auth.models import Principal
from procella.errors import BadRequest
from procella.metadata.base import StackSummaryRow, UpdateRecord
from procella.stacks.service import StackView
from procella.updates.models import HISTORY_RESULT, WIRE_STATUS
from procella.updates.service import NewUpdate


def seconds(ms: int | None) -> int:
    return 0 if ms is None else ms // 1000


def user(principal: Principal, orgs: list[str]) -> dict[str, Any]:
    """``GET /api/user``. The CLI needs a non-empty ``githubLogin`` everywhere."""
    # A team token is no person: as Pulumi Cloud, it is named after its organization
    # (what `pulumi whoami` prints), and ``tokenInfo`` says which team it acts as.
    login = principal.login if principal.team is None else principal.team.org
    out: dict[str, Any] = {
        "id": principal.user_id,
        "githubLogin": login,
        "name": login,
        "email": "",
        "avatarUrl": "",
        "organizations": [{"githubLogin": org, "name": org, "avatarUrl": ""} for org in orgs],
        "identities": [],
        "siteAdmin": principal.site_admin,
    }
    if principal.team is not None:
        # apitype's TokenInfo: `pulumi whoami -v` prints "Token type: team: <team>".
        # Personal tokens carry none ("Token type: personal").
        out["tokenInfo"] = {
            "name": principal.token_name,
            "organization": principal.team.org,
            "team": principal.team.name,
        }
    return out


def stack(view: StackView) -> dict[str, Any]:
    """``apitype.Stack``. ``config`` must stay absent: non-null means an ESC stack."""
    record = view.record
    out: dict[str, Any] = {
        "id": record.id,
        "orgName": record.org,
        "projectName": record.project,
        "stackName": record.name,
        "activeUpdate": record.active_update_id or "",
        "tags": view.tags,
        "version": record.version,
    }
    if view.running_kind is not None:
        out["currentOperation"] = {
            "kind": view.running_kind,
            "author": view.running_author or "",
            "started": seconds(view.running_started_at),
        }
    return out


def stack_summary(row: StackSummaryRow) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": row.id,
        "orgName": row.org,
        "projectName": row.project,
        "stackName": row.name,
        "resourceCount": row.resource_count,
    }
    if row.last_update_at is not None:
        out["lastUpdate"] = seconds(row.last_update_at)
    return out


def update_info(update: UpdateRecord) -> dict[str, Any]:
    """``apitype.UpdateInfo``: one entry of ``stack history``."""
    metadata = strictjson.stored_json(update.metadata) or {}
    out: dict[str, Any] = {
        "updateID": update.id,
        "kind": update.kind,
        "startTime": seconds(update.started_at or update.created_at),
        "message": metadata.get("message", ""),
        "environment": metadata.get("environment", {}),
        "config": strictjson.stored_json(update.config) or {},
        "result": HISTORY_RESULT[update.status],
        "endTime": seconds(update.ended_at),
        "version": update.version or 0,
    }
    changes = strictjson.stored_json(update.resource_changes) if update.resource_changes else None
    if changes is not None:
        out["resourceChanges"] = changes
    if update.resource_count is not None and update.resource_count >= 0:  # -1: none counted
        out["resourceCount"] = update.resource_count
    return out


def update_status(update: UpdateRecord) -> dict[str, Any]:
    """``apitype.UpdateResults``; a null continuationToken tells the CLI to stop polling."""
    ended = update.ended_at is not None
    return {
        "status": WIRE_STATUS[update.status],
        "events": [],
        "continuationToken": None if ended else "0",
    }


def new_update(kind: str, body: Any) -> NewUpdate:
    """Validate ``UpdateProgramRequest``."""
    obj = require_object(body)
    options = field(obj, "options", dict, required=False) or {}
    dry_run = field(options, "dryRun", bool, required=False) or False
    config = field(obj, "config", dict, required=False) or {}
    for key, value in config.items():
        if not isinstance(value, dict) or not isinstance(value.get("string", ""), str):
            raise BadRequest(f"config value {key!r} must be an object with a string 'string'")
    metadata = field(obj, "metadata", dict, required=False) or {}
    message = field(metadata, "message", str, required=False) or ""
    environment = field(metadata, "environment", dict, required=False) or {}
    if not all(isinstance(v, str) for v in environment.values()):
        raise BadRequest("metadata.environment values must be strings")
    program: dict[str, Any] = {
        key: obj[key] for key in ("name", "runtime", "main", "description", "options") if key in obj
    }
    return NewUpdate(
        kind=kind,
        is_preview=kind == "preview" or dry_run,
        program=program,
        config=config,
        metadata={"message": message, "environment": environment},
    )
