"""Identity, capabilities, health and the small routes `pulumi login/new/whoami` need."""

from __future__ import annotations

import json

from procella.auth.models import Role
from tests.helpers import (
    DEFAULT_ORG,
    Api,
    assert_error,
    assert_ok,
    body_json,
    make_token,
    services_of,
)


async def test_user_of_the_site_admin(api: Api, as_role) -> None:
    await as_role("acme", Role.MEMBER, "alice")  # creates org "acme"
    response = await api.call("GET", "/api/user")
    assert response.status_code == 200
    body = await body_json(response)
    assert body["githubLogin"] == "admin"
    assert body["name"] == "admin"
    assert isinstance(body["id"], str) and body["id"]
    assert body["siteAdmin"] is True
    assert body["identities"] == []
    assert "tokenInfo" not in body and "tokenInformation" not in body
    orgs = body["organizations"]
    # A site admin sees every organization; every entry has a non-empty githubLogin.
    assert sorted(o["githubLogin"] for o in orgs) == ["acme", DEFAULT_ORG]
    for org in orgs:
        assert org["githubLogin"] and org["name"] == org["githubLogin"]


async def test_user_of_an_org_member(as_role) -> None:
    alice = await as_role("acme", Role.MEMBER, "alice")
    await as_role("other-org", Role.MEMBER, "bob")
    response = await alice.call("GET", "/api/user")
    body = await body_json(response)
    assert response.status_code == 200
    assert body["githubLogin"] == "alice"
    assert body["siteAdmin"] is False
    assert [o["githubLogin"] for o in body["organizations"]] == ["acme"]


async def test_user_in_two_orgs_lists_both(app, as_role) -> None:
    await make_token(app, "first-org", Role.VIEWER, "carol")
    carol = await as_role("second-org", Role.ADMIN, "carol")
    body = await body_json(await carol.call("GET", "/api/user"))
    assert sorted(o["githubLogin"] for o in body["organizations"]) == ["first-org", "second-org"]


async def test_default_org(api: Api, as_role) -> None:
    response = await api.call("GET", "/api/user/organizations/default")
    assert response.status_code == 200
    assert await body_json(response) == {"GitHubLogin": DEFAULT_ORG, "Messages": []}
    alice = await as_role("acme", Role.VIEWER, "alice")
    body = await body_json(await alice.call("GET", "/api/user/organizations/default"))
    assert body["GitHubLogin"] == "acme"


async def test_capabilities_by_default(client) -> None:
    # No credentials: the CLI may probe capabilities before it has a token.
    response = await client.get("/api/capabilities")
    assert response.status_code == 200
    caps = {c["capability"]: c for c in (await body_json(response))["capabilities"]}
    assert caps["batch-encrypt"] == {"capability": "batch-encrypt"}
    assert caps["deployment-schema-version"] == {
        "capability": "deployment-schema-version",
        "version": 1,
        "configuration": {"version": 4},
    }
    # No deltas unless asked for: the CLI's delta checkpoints drop pending operations.
    assert set(caps) == {"batch-encrypt", "deployment-schema-version"}


async def test_capabilities_with_delta_on_and_custom_cutoff(custom_app) -> None:
    async with custom_app(delta_checkpoints=True) as (_, api):
        caps = (await body_json(await api.call("GET", "/api/capabilities")))["capabilities"]
        [delta] = [c for c in caps if c["capability"] == "delta-checkpoint-uploads-v2"]
        assert delta == {
            "capability": "delta-checkpoint-uploads-v2",
            "version": 2,
            "configuration": {"checkpointCutoffSizeBytes": 512 * 1024},
        }
        assert "delta-checkpoint-uploads" not in [c["capability"] for c in caps]
    async with custom_app(delta_checkpoints=True, delta_checkpoint_cutoff_bytes=1234) as (_, api):
        caps = (await body_json(await api.call("GET", "/api/capabilities")))["capabilities"]
        [delta] = [c for c in caps if c["capability"] == "delta-checkpoint-uploads-v2"]
        assert delta["configuration"] == {"checkpointCutoffSizeBytes": 1234}


async def test_healthz_and_readyz(client) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert await body_json(response) == {"status": "ok"}
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert await body_json(response) == {"status": "ready"}


async def test_readyz_reports_a_draining_replica(app, client) -> None:
    services = services_of(app)
    services.draining = True
    try:
        await assert_error(await client.get("/readyz"), 503)
        assert (await client.get("/healthz")).status_code == 200
    finally:
        services.draining = False


async def test_registry_and_template_stubs(api: Api) -> None:
    response = await api.call("GET", "/api/registry/templates", query={"limit": "499"})
    assert response.status_code == 200
    assert await body_json(response) == {"templates": []}
    response = await api.call("GET", "/api/registry/packages", query={"limit": "499"})
    assert await body_json(response) == {"packages": []}
    response = await api.call("GET", f"/api/orgs/{DEFAULT_ORG}/templates")
    assert await body_json(response) == {
        "templates": {},
        "hasAccessError": False,
        "hasUpstreamError": False,
    }
    for path in ("/api/registry/templates", "/api/registry/packages", "/api/orgs/x/templates"):
        await assert_error(await api.client.get(path), 401)


async def test_unknown_routes_are_json_404(api: Api) -> None:
    for path in (
        "/healthz/nope",  # (other paths are the web console's: HTML pages, tests/console)
        "/api/nope",
        "/api/stacks/organization/proj/dev/nope",
        "/api/stacks/organization/proj/dev/update/abc/nope",
        "/api/stacks/organization/proj/dev/journal/abc",  # not an update kind
        "/api/agents/signup",
    ):
        await assert_error(await api.call("GET", path), 404)


async def test_wrong_method_is_json_405(api: Api) -> None:
    for method, path in (
        ("PUT", "/api/user"),
        ("POST", "/api/capabilities"),
        ("GET", "/api/stacks/organization/proj"),
        ("PUT", "/api/stacks/organization/proj/dev"),
        ("GET", "/api/stacks/organization/proj/dev/tags"),
        ("GET", "/api/stacks/organization/proj/dev/import"),
        ("GET", "/api/stacks/organization/proj/dev/encrypt"),
        ("DELETE", "/api/stacks/organization/proj/dev/update/abc"),
        ("GET", "/api/stacks/organization/proj/dev/update/abc/complete"),
        ("POST", "/api/stacks/organization/proj/dev/update/abc/checkpoint"),
    ):
        await assert_error(await api.call(method, path), 405)


async def test_errors_never_send_a_content_encoding_the_cli_rejects(api: Api) -> None:
    response = await api.call("GET", "/api/stacks/organization/proj/missing")
    await assert_error(response, 404)
    assert response.headers.get("Content-Encoding") in (None, "gzip")
    raw = await assert_ok(await api.call("GET", "/api/user"), 200)
    json.loads(raw)
