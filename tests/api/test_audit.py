"""The audit log: every state-changing action recorded with who, what, when, from where and
the request id, in the transaction that makes it; read by org admins (the routes of
`pulumi org audit-log`); a refused action records nothing."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from typing import Any

from quart import typing as quart_typing

from procella.auth.models import Role
from tests.helpers import (
    DEFAULT_ORG,
    Api,
    assert_error,
    assert_ok,
    body_json,
    untyped,
)

STACK = f"{DEFAULT_ORG}/proj/dev"
LOG = f"/api/orgs/{DEFAULT_ORG}/auditlogs/v2"


async def audit_log(api: Api, path: str = LOG, **query: Any) -> list[dict[str, Any]]:
    """Every entry, newest first, following continuation tokens."""
    found: list[dict[str, Any]] = []
    while True:
        body = await body_json(await api.call("GET", path, query=query or None))
        found += body["auditLogEvents"]
        if "continuationToken" not in body:
            return found
        query = {**query, "continuationToken": body["continuationToken"]}


async def test_a_session_is_recorded_in_order(api: Api) -> None:
    await api.new_stack(STACK, tags={"team": "a"})
    tagged = await api.call("PATCH", f"/api/stacks/{STACK}/tags", {"owner": "b"})
    await assert_ok(tagged, 204)
    await api.run_update(STACK, untyped(2))
    cancelled = await api.started(STACK, "refresh")
    await assert_ok(await api.cancel(cancelled), 204)
    await assert_ok(await api.import_state(STACK, {"version": 3, "deployment": untyped(0)}), 200)
    secret = await api.encrypt_one(STACK, b"hush")
    await assert_ok(await api.batch_decrypt(STACK, [secret]), 200)
    shown = await api.call(
        "POST", f"/api/stacks/{STACK}/decrypt/log-batch-decryption", {"commandName": "stack export"}
    )
    await assert_ok(shown, 204)
    renamed = await api.call("POST", f"/api/stacks/{STACK}/rename", {"newName": "prod"})
    await assert_ok(renamed, 204)
    deleted = await api.call(
        "DELETE", f"/api/stacks/{DEFAULT_ORG}/proj/prod", headers={"X-Request-Id": "req-42"}
    )
    await assert_ok(deleted, 204)

    entries = await audit_log(api)
    assert [e["event"] for e in reversed(entries)] == [
        "stack.create",
        "stack.tags.update",
        "update.start",
        "update.complete",
        "update.start",
        "update.cancel",
        "stack.import",
        "secrets.decrypt",
        "secrets.decrypt",
        "stack.rename",
        "stack.delete",
    ]
    newest = entries[0]
    assert newest["requestID"] == "req-42" == deleted.headers["X-Request-Id"]
    assert newest["target"] == "proj/prod"
    assert newest["description"] == f"deleted stack {DEFAULT_ORG}/proj/prod"
    assert newest["user"]["githubLogin"] == "admin" and newest["tokenName"] == "bootstrap"
    assert {e["sourceIP"] for e in entries} == {"127.0.0.1"}, entries
    assert all(e["requestID"] for e in entries)
    # update.complete comes with the update's lease: the user who started it.
    completed = next(e for e in entries if e["event"] == "update.complete")
    assert completed["user"]["githubLogin"] == "admin" and completed["tokenName"] == "update lease"
    assert "succeeded: 2 resources" in completed["description"]
    shown_entry = entries[2]
    assert shown_entry["description"] == "showed secrets in plaintext: stack export"
    assert entries[3]["description"] == "decrypted 1 value"
    times = [e["timestamp"] for e in entries]
    assert times == sorted(times, reverse=True) and abs(times[0] - time.time()) < 60


async def test_refused_actions_record_nothing(api: Api) -> None:
    await api.new_stack(STACK)
    await assert_error(await api.create_stack(STACK), 409)
    assert [e["event"] for e in await audit_log(api)] == ["stack.create"]
    update = await api.started(STACK)
    await api.checkpoint(update, untyped(1))
    await assert_ok(await api.complete(update), 204)
    before = await audit_log(api)
    await assert_error(await api.call("DELETE", f"/api/stacks/{STACK}"), 400)  # not empty
    bad_tags = await api.call("PATCH", f"/api/stacks/{STACK}/tags", {"bad name": "x"})
    await assert_error(bad_tags, 400)
    other = await api.started(STACK)
    second = await api.new_update(STACK)
    await assert_error(await api.start_update(second), 409)  # `other` holds the stack
    await assert_ok(await api.cancel(other), 204)
    after = await audit_log(api)
    assert [e["event"] for e in after[:2]] == ["update.cancel", "update.start"]
    assert after[2:] == before


async def test_pages_and_filters(app: quart_typing.TestAppProtocol, api: Api) -> None:
    await api.new_stack(STACK)
    for i in range(104):
        await assert_ok(await api.call("PATCH", f"/api/stacks/{STACK}/tags", {"n": str(i)}), 204)
    first = await body_json(await api.call("GET", LOG))
    assert len(first["auditLogEvents"]) == 100 and "continuationToken" in first
    everything = await audit_log(api)
    assert len(everything) == 105 and len({e["requestID"] for e in everything}) == 105
    assert len(await audit_log(api, eventFilter="stack.create")) == 1
    assert len(await audit_log(api, eventFilter="stack.delete")) == 0
    assert len(await audit_log(api, userFilter="admin")) == 105
    assert await audit_log(api, userFilter="nobody") == []
    newest = everything[0]["timestamp"]
    assert len(await audit_log(api, startTime=str(newest))) >= 1
    assert await audit_log(api, startTime=str(newest + 10)) == []
    assert len(await audit_log(api, endTime=str(newest + 10))) == 105
    assert await audit_log(api, endTime=str(newest - 3600)) == []
    # v1 (CLI v3.259): other names, and startTime is the upper bound.
    v1 = f"/api/orgs/{DEFAULT_ORG}/auditlogs"
    assert await audit_log(api, v1) == everything
    assert len(await audit_log(api, v1, eventType="stack.create", user="admin")) == 1
    assert await audit_log(api, v1, user="nobody") == []
    assert await audit_log(api, v1, startTime=str(newest - 3600)) == []
    assert len(await audit_log(api, v1, startTime=str(newest + 10))) == 105


async def test_bad_queries_are_400(api: Api) -> None:
    for query in ({"continuationToken": "abc"}, {"startTime": "yesterday"}, {"endTime": "-1"}):
        await assert_error(await api.call("GET", LOG, query=query), 400)
    await assert_error(await api.call("GET", f"{LOG}/export", query={"format": "xml"}), 400)


async def test_only_org_admins_read_it(api: Api, as_role: Callable[..., Any]) -> None:
    await api.new_stack(STACK)
    member = await as_role(DEFAULT_ORG, Role.MEMBER, "mia")
    outsider = await as_role("elsewhere", Role.ADMIN, "olga")
    admin = await as_role(DEFAULT_ORG, Role.ADMIN, "ada")
    await assert_error(await member.call("GET", LOG), 403)
    await assert_error(await outsider.call("GET", LOG), 404)
    mine = await audit_log(admin)
    assert "stack.create" in [e["event"] for e in mine]
    # Another org's log holds only that org's entries (here, the token minted for olga).
    theirs = await audit_log(outsider, "/api/orgs/elsewhere/auditlogs/v2")
    assert [(e["event"], e["user"]["githubLogin"]) for e in theirs] == [
        ("token.create", "procella")
    ]


async def test_export_as_csv_and_cef(api: Api) -> None:
    await api.new_stack(STACK, tags={"a": "b"})
    response = await api.call("GET", f"{LOG}/export")
    assert response.status_code == 200 and response.content_type.startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO((await response.get_data()).decode())))
    assert [r["event"] for r in rows] == ["stack.create"]
    assert rows[0]["user"] == "admin" and rows[0]["description"] == f"created stack {STACK}"
    cef = await api.call("GET", f"{LOG}/export", query={"format": "cef"})
    line = (await cef.get_data()).decode()
    assert line.startswith("CEF:0|Procella|Procella|1|stack.create|created stack ")
    assert "suser=admin" in line and "src=127.0.0.1" in line and line.endswith("\n")


async def test_a_trusted_proxy_names_the_client(custom_app: Callable[..., Any]) -> None:
    forwarded = {"X-Forwarded-For": "198.51.100.7, 10.0.0.5"}
    async with custom_app(trusted_proxies="127.0.0.1, 10.0.0.0/8") as (_, api):
        await assert_ok(
            await api.call(
                "POST", f"/api/stacks/{DEFAULT_ORG}/p", {"stackName": "a"}, headers=forwarded
            ),
            200,
        )
        [entry] = await audit_log(api)
        assert entry["sourceIP"] == "198.51.100.7"
    async with custom_app() as (_, api):  # no trusted proxy: the header is the caller's word
        await assert_ok(
            await api.call(
                "POST", f"/api/stacks/{DEFAULT_ORG}/p", {"stackName": "b"}, headers=forwarded
            ),
            200,
        )
        assert (await audit_log(api))[0]["sourceIP"] == "127.0.0.1"
