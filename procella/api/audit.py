"""An org's audit log, for its admins: the routes `pulumi org audit-log list|export` calls.
Newest first; ``continuationToken`` pages on. The query differs by version:

* v2 (CLI v3.276: ``GET /api/orgs/<org>/auditlogs/v2[/export]``): ``eventFilter`` (an
  action such as ``stack.create``), ``userFilter`` (a login), ``startTime`` and ``endTime``
  (Unix seconds, the lower and upper bound, inclusive).
* v1 (CLI v3.259: ``/auditlogs[/export]``): ``eventType``, ``user``, and ``startTime``,
  which there is the *upper* bound.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from quart import Response, request

from procella import audit
from procella.api.auth import principal
from procella.api.context import services
from procella.api.responses import int_arg, json_response
from procella.errors import BadRequest
from procella.metadata.base import AuditEntry, AuditFilter
from procella.stacks.models import check_org_name

PAGE = 100
EXPORT_MAX = 10_000  # entries in one export; narrow it by time for more
_MAX_SECONDS = 2**53 // 1000
EXPORT_FORMATS = ("csv", "cef")
CSV_COLUMNS = ("timestamp", "event", "description", "user", "sourceIP", "tokenName", "requestID")


async def list_entries(org: str) -> Response:
    return await _list(org, v1=False)


async def list_entries_v1(org: str) -> Response:
    return await _list(org, v1=True)


async def export_entries(org: str) -> Response:
    return await _export(org, v1=False)


async def export_entries_v1(org: str) -> Response:
    return await _export(org, v1=True)


async def _list(org: str, *, v1: bool) -> Response:
    entries, more = await _page(org, PAGE, v1=v1)
    body: dict[str, Any] = {"auditLogEvents": [audit_log_event(e) for e in entries]}
    if more:
        body["continuationToken"] = str(entries[-1].id)
    return json_response(body)


async def _export(org: str, *, v1: bool) -> Response:
    export_format = request.args.get("format") or "csv"
    if export_format not in EXPORT_FORMATS:
        raise BadRequest(f"format must be csv or cef, got {export_format!r}")
    entries, _ = await _page(org, EXPORT_MAX, v1=v1)
    if export_format == "csv":
        return Response(_csv(entries), content_type="text/csv; charset=utf-8")
    return Response(_cef(entries), content_type="text/plain; charset=utf-8")


async def _page(org: str, limit: int, *, v1: bool) -> tuple[list[AuditEntry], bool]:
    caller = await principal()
    check_org_name(org)
    token = request.args.get("continuationToken") or None
    if token is not None and not (token.isascii() and token.isdigit() and len(token) < 19):
        raise BadRequest("invalid continuation token")
    f = _filter_v1(org) if v1 else _filter_v2(org)
    before = None if token is None else int(token)
    found = await audit.entries(services().meta, caller, f, before, limit + 1)
    return found[:limit], len(found) > limit


def _filter_v2(org: str) -> AuditFilter:
    since = _seconds("startTime")
    until = _seconds("endTime")
    return AuditFilter(
        org=org,
        action=request.args.get("eventFilter") or None,
        login=request.args.get("userFilter") or None,
        since_ms=None if since is None else since * 1000,
        until_ms=None if until is None else until * 1000 + 999,
    )


def _filter_v1(org: str) -> AuditFilter:
    until = _seconds("startTime")
    return AuditFilter(
        org=org,
        action=request.args.get("eventType") or None,
        login=request.args.get("user") or None,
        until_ms=None if until is None else until * 1000 + 999,
    )


def _seconds(name: str) -> int | None:
    value = int_arg(name, -1, minimum=0, maximum=_MAX_SECONDS)
    return None if value < 0 else value


def audit_log_event(entry: AuditEntry) -> dict[str, Any]:
    """``apitype.AuditLogEvent``, with Procella's request id and target besides."""
    event: dict[str, Any] = {
        "timestamp": entry.at_ms // 1000,
        "event": entry.action,
        "description": entry.description,
        "user": {"name": entry.login, "githubLogin": entry.login, "avatarUrl": ""},
        "sourceIP": entry.source_ip,
        "requestID": entry.request_id,
        "target": entry.target,
    }
    if entry.token_name:
        event["tokenName"] = entry.token_name
    return event


def _csv(entries: list[AuditEntry]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for e in entries:
        row = (e.at_ms // 1000, e.action, e.description, e.login, e.source_ip, e.token_name)
        writer.writerow((*row, e.request_id))
    return out.getvalue()


def _cef(entries: list[AuditEntry]) -> str:
    """ArcSight Common Event Format, one line per entry."""
    lines = []
    for e in entries:
        header = "|".join(
            ["CEF:0", "Procella", "Procella", "1", *map(_cef_header, (e.action, e.description))]
        )
        extension = {
            "rt": str(e.at_ms),
            "suser": e.login,
            "src": e.source_ip,
            "cs1Label": "tokenName",
            "cs1": e.token_name,
            "externalId": e.request_id,
        }
        pairs = " ".join(f"{k}={_cef_value(v)}" for k, v in extension.items() if v)
        lines.append(f"{header}|3|{pairs}\n")
    return "".join(lines)


def _cef_header(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _cef_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace("=", "\\=").replace("\n", "\\n")
