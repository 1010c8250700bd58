"""OIDC: the token exchange ``pulumi login --oidc-token`` calls, and the issuer and policy
registrations of org admins, in the shapes of Pulumi Cloud's REST API.

``POST /api/oauth/token`` is the one route whose errors are not ``{"code","message"}``: it
answers in OAuth's shape (``{"error","error_description"}``, RFC 6749 section 5.2), which the
CLI prints after "OIDC token exchange failed:".
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from quart import Response, request

from procella.api.auth import principal
from procella.api.body import field, read_body, read_json, require_object
from procella.api.context import services
from procella.api.responses import json_response, no_content
from procella.auth import oidc
from procella.auth.service import iso
from procella.errors import BadRequest
from procella.metadata.base import IssuerRow

# An ID token is a few KB; the whole form is refused well before the general body limit.
MAX_FORM_BYTES = 64 * 1024


async def exchange_token() -> Response:
    try:
        form = await _exchange_form()
        exchanged = await services().oidc.exchange(oidc.parse_request(form))
    except oidc.ExchangeError as exc:
        return _oauth_error(exc.error, exc.description)
    answer = {
        "access_token": exchanged.token,
        "issued_token_type": oidc.TOKEN_TYPE_URN + exchanged.token_type,
        "token_type": "Bearer",
        "expires_in": exchanged.expires_in,
        "scope": exchanged.scope,
    }
    response = json_response(answer)
    response.headers["Cache-Control"] = "no-store"
    return response


async def _exchange_form() -> dict[str, str]:
    """The form (as the CLI sends it) or a JSON object of strings (for other clients)."""
    try:
        data = await read_body(MAX_FORM_BYTES)
    except BadRequest as exc:
        raise oidc.ExchangeError("invalid_request", exc.message) from None
    if len(data) > MAX_FORM_BYTES:
        raise oidc.ExchangeError("invalid_request", f"the request exceeds {MAX_FORM_BYTES} bytes")
    kind = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    try:
        if kind == "application/json":
            value = json.loads(data)
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                raise ValueError("a JSON object of strings")
            return value
        return dict(parse_qsl(data.decode("utf-8"), keep_blank_values=True, strict_parsing=False))
    except (ValueError, UnicodeDecodeError) as exc:
        raise oidc.ExchangeError("invalid_request", f"unreadable request body: {exc}") from None


def _oauth_error(error: str, description: str) -> Response:
    response = json_response({"error": error, "error_description": description}, status=400)
    response.headers["Cache-Control"] = "no-store"
    return response


# Issuers --------------------------------------------------------------------------------


async def list_issuers(org: str) -> Response:
    caller = await principal()
    rows = await services().oidc.list_issuers(caller, org)
    return json_response({"oidcIssuers": [issuer_json(row) for row in rows]})


async def register_issuer(org: str) -> Response:
    caller = await principal()
    body = require_object(await read_json(MAX_FORM_BYTES))
    audiences = field(body, "audiences", list, required=False)
    created = await services().oidc.register_issuer(
        caller,
        org,
        field(body, "name", str, required=True) or "",
        field(body, "url", str, required=True) or "",
        audiences,
        field(body, "maxExpiration", int, required=False),
    )
    return json_response(issuer_json(created), status=201)


async def get_issuer(org: str, issuer_id: str) -> Response:
    caller = await principal()
    return json_response(issuer_json(await services().oidc.issuer(caller, org, issuer_id)))


async def delete_issuer(org: str, issuer_id: str) -> Response:
    caller = await principal()
    await services().oidc.delete_issuer(caller, org, issuer_id)
    return no_content()


# Policies -------------------------------------------------------------------------------


async def get_policies(org: str, issuer_id: str) -> Response:
    caller = await principal()
    return json_response(policies_json(await services().oidc.issuer(caller, org, issuer_id)))


async def set_policies(org: str, issuer_id: str) -> Response:
    caller = await principal()
    await services().oidc.issuer(caller, org, issuer_id)  # 404/403 before the body is read
    body = require_object(await read_json(MAX_FORM_BYTES))
    policies = oidc.parse_policies(body.get("policies"))
    expected = field(body, "version", int, required=False)
    updated = await services().oidc.set_policies(caller, org, issuer_id, policies, expected)
    return json_response(policies_json(updated))


def issuer_json(row: IssuerRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "url": row.url,
        "audiences": row.audiences,
        "maxExpiration": row.max_expiration_s,
        "created": iso(row.created_at),
        "modified": iso(row.modified_at),
    }


def policies_json(row: IssuerRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "version": row.policy_version,
        "created": iso(row.created_at),
        "modified": iso(row.modified_at),
        "policies": row.policies,
    }
