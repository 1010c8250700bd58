"""Who may call what: API tokens, roles per organization, and update tokens (leases)."""

from __future__ import annotations

from typing import Any

import pytest

from procella.auth.models import Role
from tests.helpers import (
    DEFAULT_ORG,
    Api,
    assert_error,
    assert_ok,
    b64,
    body_json,
    expire_lease,
    stdout_event,
    untyped,
)

S = "acme/proj/dev"


@pytest.fixture
async def acme(api: Api) -> str:
    """Stack S in org acme with one finished update, one running update and a secret."""
    await api.new_stack(S, tags={"t": "1"})
    await api.run_update(S, untyped(2))
    return S


# Missing and bad credentials --------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [None, "", "token", "token ", "tokenabc", "Basic abc", "update-token x", "pul-aaaa"],
)
async def test_malformed_credentials_are_401(client, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    for method, path in (
        ("GET", "/api/user"),
        ("GET", "/api/user/stacks"),
        ("GET", f"/api/stacks/{S}"),
        ("POST", f"/api/stacks/{S}/encrypt"),
    ):
        response = await client.open(path, method=method, headers=headers)
        await assert_error(response, 401)


async def test_unknown_token_is_401(client) -> None:
    headers = {"Authorization": "token pul-" + "b" * 40}
    await assert_error(await client.get("/api/user", headers=headers), 401)
    await assert_error(await client.post(f"/api/stacks/{DEFAULT_ORG}/p", headers=headers), 401)


async def test_bearer_and_case_insensitive_scheme(client) -> None:
    from tests.conftest import ADMIN_TOKEN

    for header in (f"Bearer {ADMIN_TOKEN}", f"Token {ADMIN_TOKEN}", f"token   {ADMIN_TOKEN} "):
        response = await client.get("/api/user", headers={"Authorization": header})
        assert response.status_code == 200, header


# Roles -------------------------------------------------------------------------------


def read_calls(stack: str, update_path: str) -> list[tuple[str, str, Any]]:
    return [
        ("GET", f"/api/stacks/{stack}", None),
        ("GET", f"/api/stacks/{stack}/export", None),
        ("GET", f"/api/stacks/{stack}/export/1", None),
        ("GET", f"/api/stacks/{stack}/updates", None),
        ("GET", f"/api/stacks/{stack}/updates/latest", None),
        ("GET", update_path, None),
        ("GET", f"{update_path}/events", None),
    ]


async def test_viewer_can_read(api: Api, acme: str, as_role) -> None:
    viewer = await as_role("acme", Role.VIEWER, "vera")
    [entry] = await api.history(acme)
    update_path = f"/api/stacks/{acme}/update/{entry['updateID']}"
    for method, path, body in read_calls(acme, update_path):
        response = await viewer.call(method, path, body)
        assert response.status_code == 200, (path, await response.get_data())
    assert (await viewer.call("HEAD", "/api/stacks/acme/proj")).status_code == 200
    stacks = (await viewer.list_stacks())["stacks"]
    assert [s["stackName"] for s in stacks] == ["dev"]
    assert (await viewer.call("GET", "/api/user/organizations/default")).status_code == 200


async def test_viewer_cannot_write(api: Api, acme: str, as_role) -> None:
    viewer = await as_role("acme", Role.VIEWER, "vera")
    ciphertext = await api.encrypt_one(acme, b"x")
    pending = await api.new_update(acme)
    running = await api.started(acme)
    before_state = await api.export_bytes(acme)
    before_stack = await api.stack_json(acme)
    calls: list[tuple[str, str, Any, bool]] = [
        ("POST", "/api/stacks/acme/proj", {"stackName": "new"}, False),
        ("POST", f"/api/stacks/{acme}/update", {"options": {"dryRun": False}}, False),
        ("POST", f"/api/stacks/{acme}/preview", {"options": {"dryRun": True}}, False),
        ("POST", pending.path, {}, False),
        ("POST", f"{running.path}/cancel", None, False),
        ("POST", f"/api/stacks/{acme}/import", untyped(0), True),
        ("PATCH", f"/api/stacks/{acme}/tags", {"x": "y"}, False),
        ("POST", f"/api/stacks/{acme}/rename", {"newName": "z", "newProject": "proj"}, False),
        ("POST", f"/api/stacks/{acme}/encrypt", {"plaintext": b64(b"x")}, False),
        ("POST", f"/api/stacks/{acme}/decrypt", {"ciphertext": ciphertext}, False),
        ("POST", f"/api/stacks/{acme}/batch-encrypt", {"plaintexts": [b64(b"x")]}, True),
        ("POST", f"/api/stacks/{acme}/batch-decrypt", {"ciphertexts": [ciphertext]}, True),
        ("DELETE", f"/api/stacks/{acme}?force=true", None, False),
    ]
    for method, path, body, gzip_body in calls:
        kwargs: dict[str, Any] = {"gzip_body": gzip_body}
        if body is not None:
            kwargs["body"] = body
        response = await viewer.call(method, path, **kwargs)
        await assert_error(response, 403)
    assert await api.export_bytes(acme) == before_state
    assert await api.stack_json(acme) == before_stack
    assert (await body_json(await api.status(running)))["status"] == "running"
    assert (await body_json(await api.status(pending)))["status"] == "not started"
    assert [s["stackName"] for s in (await api.list_stacks(organization="acme"))["stacks"]] == [
        "dev"
    ]


async def test_member_can_write_but_not_delete(api: Api, acme: str, as_role) -> None:
    member = await as_role("acme", Role.MEMBER, "mia")
    await member.new_stack("acme/proj/member-made")
    update = await member.run_update(acme, untyped(1))
    assert update.version == 2
    ciphertext = await member.encrypt_one(acme, b"m")
    assert (await member.decrypt(acme, ciphertext)).status_code == 200
    response = await member.call(
        "DELETE", "/api/stacks/acme/proj/member-made", query={"force": "true"}
    )
    await assert_error(response, 403)
    assert (await api.get_stack("acme/proj/member-made")).status_code == 200
    admin = await as_role("acme", Role.ADMIN, "ada")
    response = await admin.call(
        "DELETE", "/api/stacks/acme/proj/member-made", query={"force": "true"}
    )
    await assert_ok(response, 204)
    await assert_error(await api.get_stack("acme/proj/member-made"), 404)


async def test_other_org_sees_nothing(api: Api, acme: str, as_role) -> None:
    """A user of org B gets 404 on every route of org A's stacks, whatever their role."""
    outsider = await as_role("bravo", Role.ADMIN, "bob")
    await outsider.new_stack("bravo/proj/dev")
    ciphertext = await api.encrypt_one(acme, b"x")
    running = await api.started(acme)
    [entry] = [h for h in await api.history(acme) if h["result"] == "succeeded"]
    done = f"/api/stacks/{acme}/update/{entry['updateID']}"
    calls: list[tuple[str, str, Any, bool]] = [
        *[(m, p, b, False) for m, p, b in read_calls(acme, done)],
        ("HEAD", "/api/stacks/acme/proj", None, False),
        ("POST", "/api/stacks/acme/proj", {"stackName": "new"}, False),
        ("DELETE", f"/api/stacks/{acme}?force=true", None, False),
        ("PATCH", f"/api/stacks/{acme}/tags", {"x": "y"}, False),
        ("POST", f"/api/stacks/{acme}/rename", {"newName": "z", "newProject": "proj"}, False),
        ("POST", f"/api/stacks/{acme}/import", untyped(0), True),
        ("POST", f"/api/stacks/{acme}/update", {"options": {}}, False),
        ("POST", running.path, {}, False),
        ("POST", f"{running.path}/cancel", None, False),
        ("GET", f"{running.path}/events", None, False),
        ("POST", f"/api/stacks/{acme}/encrypt", {"plaintext": b64(b"x")}, False),
        ("POST", f"/api/stacks/{acme}/decrypt", {"ciphertext": ciphertext}, False),
        ("POST", f"/api/stacks/{acme}/batch-encrypt", {"plaintexts": [b64(b"x")]}, True),
        ("POST", f"/api/stacks/{acme}/batch-decrypt", {"ciphertexts": [ciphertext]}, True),
        ("POST", f"/api/stacks/{acme}/decrypt/log-decryption", {"secretName": "x"}, False),
    ]
    for method, path, body, gzip_body in calls:
        kwargs: dict[str, Any] = {"gzip_body": gzip_body}
        if body is not None:
            kwargs["body"] = body
        response = await outsider.call(method, path, **kwargs)
        if method == "HEAD":
            assert response.status_code == 404
        else:
            await assert_error(response, 404)
    # Not even a hint in listings.
    listed = (await outsider.list_stacks())["stacks"]
    assert [(s["orgName"], s["stackName"]) for s in listed] == [("bravo", "dev")]
    assert (await outsider.list_stacks(organization="acme"))["stacks"] == []
    assert (await api.stack_json(acme))["activeUpdate"] == running.id
    orgs = (await body_json(await outsider.call("GET", "/api/user")))["organizations"]
    assert [o["githubLogin"] for o in orgs] == ["bravo"]


async def test_a_member_cannot_create_stacks_in_another_or_new_org(as_role) -> None:
    member = await as_role("acme", Role.ADMIN, "ada")
    await assert_error(await member.create_stack("brand-new-org/proj/dev"), 404)
    await assert_error(await member.create_stack(f"{DEFAULT_ORG}/proj/dev"), 404)


# Update tokens -----------------------------------------------------------------------


def lease_calls(update_path: str) -> list[tuple[str, str, Any, bool]]:
    return [
        ("POST", f"{update_path}/renew_lease", {"token": "", "duration": 300}, False),
        ("PATCH", f"{update_path}/checkpoint", {"version": 3, "deployment": {}}, True),
        (
            "PATCH",
            f"{update_path}/checkpointverbatim",
            {
                "version": 3,
                "untypedDeployment": {"version": 3, "deployment": {}},
                "sequenceNumber": 1,
            },
            True,
        ),
        (
            "PATCH",
            f"{update_path}/checkpointdelta",
            {"version": 3, "checkpointHash": "0" * 64, "sequenceNumber": 1, "deploymentDelta": []},
            True,
        ),
        ("POST", f"{update_path}/events/batch", {"events": [stdout_event(0)]}, True),
        ("POST", f"{update_path}/complete", {"status": "succeeded"}, False),
    ]


async def call_all(
    api: Api, calls, *, lease: str | None, headers: dict[str, Any] | None, status: int
) -> None:
    for method, path, body, gzip_body in calls:
        response = await api.call(
            method, path, body, gzip_body=gzip_body, lease=lease, headers=headers
        )
        await assert_error(response, status)


@pytest.mark.parametrize(
    "authorization",
    [None, "token {api}", "update-token", "update-token ", "bearer {lease}", "{lease}"],
)
async def test_lease_calls_need_an_update_token_header(
    api: Api, acme: str, authorization: str | None
) -> None:
    update = await api.started(acme)
    from tests.conftest import ADMIN_TOKEN

    headers: dict[str, str] = {"Authorization": ""}
    if authorization is not None:
        headers["Authorization"] = authorization.format(api=ADMIN_TOKEN, lease=update.token)
    for method, path, body, gzip_body in lease_calls(update.path):
        response = await api.call(method, path, body, gzip_body=gzip_body, headers=headers)
        await assert_error(response, 401)
    assert (await body_json(await api.status(update)))["status"] == "running"


async def test_a_lease_works_only_for_its_own_update(api: Api, acme: str) -> None:
    mine = await api.started(acme)
    preview = await api.started(acme, "preview", dry_run=True)
    other_stack = await api.new_stack("acme/proj/other")
    theirs = await api.started(other_stack)
    # X's lease on Y's URL (same stack; a preview with its own lease).
    await call_all(api, lease_calls(preview.path), lease=mine.token, headers=None, status=403)
    # S's lease on T's URL, with T's update id.
    await call_all(api, lease_calls(theirs.path), lease=mine.token, headers=None, status=403)
    # S's lease and update id, but T's stack in the URL.
    wrong_stack_path = f"/api/stacks/{other_stack}/update/{mine.id}"
    await call_all(api, lease_calls(wrong_stack_path), lease=mine.token, headers=None, status=403)
    # A made-up lease.
    await call_all(api, lease_calls(mine.path), lease="x" * 43, headers=None, status=403)
    # Nothing changed: all three still run, no state was written.
    for update in (mine, preview, theirs):
        assert (await body_json(await api.status(update)))["status"] == "running"
    assert len(await api.history(acme)) == 2
    # And each lease still works where it belongs.
    await assert_ok(await api.renew(mine), 200)
    await assert_ok(await api.renew(theirs), 200)


async def test_unknown_update_with_a_lease_is_404(api: Api, acme: str) -> None:
    mine = await api.started(acme)
    path = f"/api/stacks/{acme}/update/00000000000000000000000000000000"
    await call_all(api, lease_calls(path), lease=mine.token, headers=None, status=404)


async def test_expired_lease_is_403_everywhere(app, api: Api, acme: str) -> None:
    update = await api.started(acme)
    before = await api.export_bytes(acme)
    await expire_lease(app, update.id)
    await call_all(api, lease_calls(update.path), lease=update.token, headers=None, status=403)
    assert await api.export_bytes(acme) == before


@pytest.mark.parametrize("ending", ["complete", "cancel"])
async def test_renew_after_the_update_ended_is_403(api: Api, acme: str, ending: str) -> None:
    update = await api.started(acme)
    if ending == "complete":
        await assert_ok(await api.complete(update), 204)
    else:
        await assert_ok(await api.cancel(update), 204)
    await assert_error(await api.renew(update), 403)


async def test_user_token_routes_refuse_update_tokens(api: Api, acme: str) -> None:
    update = await api.started(acme)
    for method, path in (
        ("GET", f"/api/stacks/{acme}"),
        ("GET", update.path),
        ("POST", f"{update.path}/cancel"),
    ):
        response = await api.call(method, path, lease=update.token)
        await assert_error(response, 401)
    assert (await body_json(await api.status(update)))["status"] == "running"
