"""The console follows the teams' rules as the API does: a team's write grant lets an org
viewer reveal a secret of that stack only; a team token sees only the stacks its grants
cover and has no personal tokens."""

from __future__ import annotations

import json
from typing import Any

from procella.auth.models import Role
from tests.console.conftest import ORG, STACK, Browser, Seeded
from tests.helpers import Api, assert_ok

TEAMS = f"/api/orgs/{ORG}/teams"


async def _team(api: Api, body: dict[str, Any]) -> None:
    await assert_ok(await api.call("POST", TEAMS, {"name": "deployers"}), 201)
    await assert_ok(await api.call("PATCH", f"{TEAMS}/deployers", body), 200)


async def test_a_write_grant_lets_a_viewer_reveal_on_that_stack_only(
    api: Api, as_user: Any, seeded: Seeded
) -> None:
    vera = await as_user(Role.VIEWER, "vera")
    await _team(api, {"memberAction": "add", "member": "vera"})
    grant = {"projectName": "web", "stackName": "dev", "permission": 102}
    await assert_ok(
        await api.call("PATCH", f"{TEAMS}/deployers", {"addStackPermission": grant}), 200
    )
    page = await vera.get(f"/{STACK}")
    assert "Reveal</button>" in page.text
    revealed = await vera.post(f"/{STACK}/outputs/reveal", {"name": "password"})
    assert revealed.status == 200 and "hunter2" in revealed.text.replace("&#34;", "")
    assert "Reveal</button>" not in (await vera.get("/acme/api/prod")).text


async def test_a_team_token_sees_only_its_grants(
    app: Any, api: Api, browser: Browser, seeded: Seeded
) -> None:
    grant = {"projectName": "web", "stackName": "dev", "permission": 101}
    await _team(api, {"addStackPermission": grant})
    response = await api.call("POST", f"{TEAMS}/deployers/tokens", {"name": "ci"})
    token = json.loads(await assert_ok(response, 201))["tokenValue"]
    assert (await browser.login(token)).status == 302
    org = await browser.get("/acme")
    assert ">dev</a>" in org.text and ">prod</a>" not in org.text
    assert (await browser.get(f"/{STACK}")).status == 200
    assert (await browser.get(f"/{STACK}/updates/1")).status == 200
    assert (await browser.get("/acme/api/prod")).status == 404
    page = await browser.post(f"/{STACK}/outputs/reveal", {"name": "password"})
    assert page.status == 403
    assert (await browser.get("/account/tokens")).status == 403
    assert (await browser.get("/other/x/y")).status == 404
