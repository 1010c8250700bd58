"""Identity, capabilities, health, and the registry calls `pulumi new` makes."""

from __future__ import annotations

from quart import Response

from procella.api import wire
from procella.api.auth import principal
from procella.api.context import services
from procella.api.errors import error_response
from procella.api.responses import json_response
from procella.errors import NotFound


async def get_user() -> Response:
    caller = await principal()
    orgs = await services().auth.org_names(caller)
    return json_response(wire.user(caller, orgs))


async def default_org() -> Response:
    caller = await principal()
    if caller.site_admin:
        org = services().settings.default_org
    elif caller.orgs:
        org = caller.orgs[0]
    else:
        raise NotFound("you belong to no organization")
    # apitype.GetDefaultOrganizationResponse has no JSON tags: these are its Go names.
    return json_response({"GitHubLogin": org, "Messages": []})


async def capabilities() -> Response:
    settings = services().settings
    caps: list[dict[str, object]] = [
        {"capability": "batch-encrypt"},
        {"capability": "deployment-schema-version", "version": 1, "configuration": {"version": 4}},
    ]
    if settings.delta_checkpoints:
        caps.append(
            {
                "capability": "delta-checkpoint-uploads-v2",
                "version": 2,
                "configuration": {
                    "checkpointCutoffSizeBytes": settings.delta_checkpoint_cutoff_bytes
                },
            }
        )
    return json_response({"capabilities": caps})


async def registry_templates() -> Response:
    """An empty registry: `pulumi new` then falls back to its own template sources."""
    await principal()
    return json_response({"templates": []})


async def registry_packages() -> Response:
    await principal()
    return json_response({"packages": []})


async def org_templates(org: str) -> Response:
    await principal()
    return json_response({"templates": {}, "hasAccessError": False, "hasUpstreamError": False})


async def healthz() -> Response:
    """Liveness: the process serves requests."""
    return json_response({"status": "ok"})


async def readyz() -> Response:
    """Readiness: both stores answer and the replica is not draining."""
    found = services()
    if found.draining:
        return error_response(503, "draining")
    try:
        await found.meta.ping()
        await found.blobs.ping()
    except Exception as exc:  # any failure means "not ready"; the reason goes to the body
        return error_response(503, f"not ready: {exc}")
    return json_response({"status": "ready"})
