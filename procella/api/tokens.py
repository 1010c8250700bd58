"""An org's API tokens, for its admins: ``/api/orgs/<org>/tokens``.

``POST`` mints a token for a user of the org (created if needed) with a role there, and
answers its secret once; ``GET`` lists the tokens of the org's members, never a secret nor
a hash; ``DELETE .../<id>`` revokes one. Times are Unix seconds, 0 for none.
"""

from __future__ import annotations

import re
import time
from typing import Any

from quart import Response

from procella.api.auth import principal
from procella.api.body import field, read_json, require_object
from procella.api.context import services
from procella.api.responses import json_response, no_content
from procella.auth.models import Role
from procella.errors import BadRequest
from procella.metadata.base import TokenRow
from procella.stacks.models import check_org_name

_MAX_TEXT = 200
_LOGIN = re.compile(r"[A-Za-z0-9._-]{1,100}")
MAX_SECONDS = 2**53 // 1000


async def list_tokens(org: str) -> Response:
    caller = await principal()
    check_org_name(org)
    rows = await services().auth.list_tokens(caller, org)
    return json_response({"tokens": [token_info(row) for row in rows]})


async def create_token(org: str) -> Response:
    caller = await principal()
    check_org_name(org)
    caller.require(org, Role.ADMIN)  # before the body is read
    body = require_object(await read_json(services().settings.max_inflated_bytes))
    name = text_field(body, "name", required=True)
    try:
        role = Role.parse(text_field(body, "role") or "member")
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    login = text_field(body, "login") or f"{org}-{role.name.lower()}"
    if not _LOGIN.fullmatch(login):
        raise BadRequest("field 'login' must be 1-100 of A-Z a-z 0-9 . _ -")
    expires = field(body, "expires", int, required=False) or 0  # Unix seconds; 0: never
    if not 0 <= expires <= MAX_SECONDS:
        raise BadRequest("field 'expires' must be Unix seconds, or 0 for no expiry")
    issued = await services().auth.create_token(
        org,
        role,
        login,
        name,
        description=text_field(body, "description"),
        expires_in=None if expires == 0 else expires - time.time(),
        actor=caller,
    )
    answer = {
        "id": issued.id,
        "tokenValue": issued.token,
        "name": name,
        "login": login,
        "role": role.name.lower(),
        "expires": 0 if issued.expires_at is None else issued.expires_at // 1000,
    }
    return json_response(answer, status=201)


async def revoke_token(org: str, token_id: str) -> Response:
    caller = await principal()
    check_org_name(org)
    await services().auth.revoke_token(caller, org, token_id)
    return no_content()


def token_info(row: TokenRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "description": row.description,
        "login": row.login,
        "role": row.role,
        "created": row.created_at // 1000,
        "lastUsed": 0 if row.last_used_at is None else row.last_used_at // 1000,
        "expires": 0 if row.expires_at is None else row.expires_at // 1000,
        "revoked": 0 if row.revoked_at is None else row.revoked_at // 1000,
    }


def text_field(body: dict[str, Any], name: str, *, required: bool = False) -> str:
    value = field(body, name, str, required=required) or ""
    if len(value) > _MAX_TEXT or any(ord(c) < 32 for c in value):
        raise BadRequest(f"field {name!r} must be at most {_MAX_TEXT} printable characters")
    if required and not value.strip():
        raise BadRequest(f"field {name!r} must not be empty")
    return value
