"""The two credentials the CLI sends: ``token <api token>`` and ``update-token <lease>``."""

from __future__ import annotations

from quart import request

from procella import logs
from procella.api.context import services
from procella.auth.models import Principal, Role
from procella.errors import Unauthorized


def _credential(scheme: str) -> str:
    header = request.headers.get("Authorization", "")
    name, _, value = header.strip().partition(" ")
    if not header:
        raise Unauthorized("missing Authorization header; log in with an access token")
    if name.lower() != scheme or not value.strip():
        raise Unauthorized(f"expected 'Authorization: {scheme} <value>'")
    return value.strip()


async def principal() -> Principal:
    """The caller of a user-token route (``Authorization: token ...``)."""
    header = request.headers.get("Authorization", "")
    # Bearer is accepted too, for scripts and other HTTP clients.
    scheme = "bearer" if header.lower().startswith("bearer ") else "token"
    caller = await services().auth.authenticate(_credential(scheme))
    logs.note(login=caller.login)
    return caller


async def writer_of(org: str, project: str, stack: str | None = None) -> Principal:
    """The caller, if they may write to the stack (or, without ``stack``, create stacks in
    the project): checked before a body is read. The service checks again on the stack
    it finds."""
    caller = await principal()
    if stack is None:
        caller.require_project(org, project, Role.MEMBER)
    else:
        caller.require_stack(org, project, stack, Role.MEMBER)
    return caller


def update_token() -> str:
    """The lease of an update-token route (``Authorization: update-token ...``)."""
    return _credential("update-token")
