"""Token lifecycle: org admins mint, list and revoke their members' tokens over HTTP; a
revoked or expired token is a 401; a token's last use is recorded at most once a minute."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from quart import typing as quart_typing

from procella.auth.models import Role
from tests.helpers import DEFAULT_ORG, Api, assert_error, body_json, services_of

TOKENS = f"/api/orgs/{DEFAULT_ORG}/tokens"


async def mint(api: Api, **body: Any) -> dict[str, Any]:
    response = await api.call("POST", TOKENS, {"name": "ci", **body})
    assert response.status_code == 201, await response.get_data()
    created: dict[str, Any] = await body_json(response)
    return created


async def listed(api: Api, path: str = TOKENS) -> dict[str, dict[str, Any]]:
    body = await body_json(await api.call("GET", path))
    return {t["id"]: t for t in body["tokens"]}


async def whoami(api: Api) -> Any:
    return await api.call("GET", "/api/user")


async def test_an_admin_mints_lists_and_revokes_a_token(api: Api) -> None:
    expires = int(time.time()) + 3600
    created = await mint(api, login="cibot", role="member", description="deploys", expires=expires)
    assert created["tokenValue"].startswith("pul-") and created["expires"] == expires
    bot = api.as_token(created["tokenValue"])
    user = await body_json(await whoami(bot))
    assert user["githubLogin"] == "cibot"
    info = (await listed(api))[created["id"]]
    assert info == {
        "id": created["id"],
        "name": "ci",
        "description": "deploys",
        "login": "cibot",
        "role": "member",
        "created": info["created"],
        "lastUsed": info["lastUsed"],
        "expires": expires,
        "revoked": 0,
    }
    assert abs(info["created"] - time.time()) < 60 and info["lastUsed"] >= info["created"]
    everything = str(await (await api.call("GET", TOKENS)).get_data())
    assert created["tokenValue"] not in everything  # never the secret again

    assert (await api.call("DELETE", f"{TOKENS}/{created['id']}")).status_code == 204
    await assert_error(await whoami(bot), 401)  # at once on this replica
    assert (await listed(api))[created["id"]]["revoked"] > 0
    await assert_error(await api.call("DELETE", f"{TOKENS}/{created['id']}"), 404)
    log = await body_json(await api.call("GET", f"/api/orgs/{DEFAULT_ORG}/auditlogs/v2"))
    events = [(e["event"], e["user"]["githubLogin"]) for e in log["auditLogEvents"][:2]]
    assert events == [("token.revoke", "admin"), ("token.create", "admin")]


async def test_an_expired_token_is_refused(app: quart_typing.TestAppProtocol, api: Api) -> None:
    created = await mint(api, expires=int(time.time()) + 2)
    bot = api.as_token(created["tokenValue"])
    assert (await whoami(bot)).status_code == 200
    async with services_of(app).meta.transaction() as conn:
        await conn.execute(
            "UPDATE api_tokens SET expires_at = NOW_MS - 1000 WHERE id = ?", (created["id"],)
        )
    deadline = time.monotonic() + 10  # the cache keeps it no longer than its expiry
    while (await whoami(bot)).status_code != 401:
        assert time.monotonic() < deadline, "an expired token still works"
        await asyncio.sleep(0.2)


async def test_last_use_is_written_at_most_once_a_minute(
    app: quart_typing.TestAppProtocol, custom_app: Callable[..., Any]
) -> None:
    async with custom_app(auth_cache_seconds=0) as (test_app, api):  # every call reads it
        created = await mint(api)
        bot = api.as_token(created["tokenValue"])
        meta = services_of(test_app).meta

        async def last_used() -> int | None:
            async with meta.read() as conn:
                row = await conn.fetchone(
                    "SELECT last_used_at FROM api_tokens WHERE id = ?", (created["id"],)
                )
            assert row is not None
            return None if row[0] is None else int(row[0])

        assert await last_used() is None
        assert (await whoami(bot)).status_code == 200
        first = await last_used()
        assert first is not None
        for _ in range(3):
            assert (await whoami(bot)).status_code == 200
        assert await last_used() == first  # not rewritten within the minute
        async with meta.transaction() as conn:
            await conn.execute(
                "UPDATE api_tokens SET last_used_at = NOW_MS - 61000 WHERE id = ?",
                (created["id"],),
            )
        assert (await whoami(bot)).status_code == 200
        later = await last_used()
        assert later is not None and later >= first  # written again: the last was old


async def test_only_org_admins_manage_tokens(api: Api, as_role: Callable[..., Any]) -> None:
    member = await as_role(DEFAULT_ORG, Role.MEMBER, "mia")
    outsider = await as_role("elsewhere", Role.ADMIN, "olga")
    await assert_error(await member.call("GET", TOKENS), 403)
    await assert_error(await member.call("POST", TOKENS, {"name": "x"}), 403)
    await assert_error(await outsider.call("GET", TOKENS), 404)
    created = await mint(api, login="cibot")
    # An admin of another org cannot revoke a token of this org's member.
    elsewhere = f"/api/orgs/elsewhere/tokens/{created['id']}"
    await assert_error(await outsider.call("DELETE", elsewhere), 404)
    assert (await whoami(api.as_token(created["tokenValue"]))).status_code == 200
    assert created["id"] not in await listed(outsider, "/api/orgs/elsewhere/tokens")


async def test_bad_requests_change_nothing(api: Api) -> None:
    before = await listed(api)
    for body in (
        {},
        {"name": ""},
        {"name": "x", "role": "owner"},
        {"name": "x", "login": "no spaces"},
        {"name": "x", "expires": int(time.time()) - 10},
        {"name": "x", "expires": "tomorrow"},
        {"name": "x" * 201},
    ):
        await assert_error(await api.call("POST", TOKENS, body), 400)
    await mint(api, login="dup")
    await assert_error(await api.call("POST", TOKENS, {"name": "ci", "login": "dup"}), 409)
    await assert_error(await api.call("DELETE", f"{TOKENS}/nope"), 404)
    assert len(await listed(api)) == len(before) + 1
