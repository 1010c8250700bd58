"""The console's login session: an encrypted, authenticated cookie, and CSRF tokens.

The cookie holds the API token the user logged in with, a CSRF token and an expiry, as
AES-256-GCM under a key every replica shares (``PROCELLA_CONSOLE_SESSION_KEY``, or one
derived from the encryption key), so any replica reads it and nobody can forge or read it.
Each request authenticates the token again through ``AuthService`` (cached for
``PROCELLA_AUTH_CACHE_SECONDS``), so a revoked or expired token ends its sessions: the
console never holds more rights than the API grants that token.

The cookie is HttpOnly, SameSite=Lax, and Secure when the request came over TLS (directly
or, per ``X-Forwarded-Proto``, through a proxy). Every form carries the session's CSRF token;
the login form, before any session, uses a double-submit cookie of its own.
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from quart import current_app, request
from werkzeug.sansio.response import Response

from procella.api.context import services
from procella.auth.models import Principal
from procella.errors import BadRequest, Unauthorized

COOKIE = "procella_session"
LOGIN_CSRF_COOKIE = "procella_login_csrf"
_AAD = b"procella console session v1"
_KEY_EXTENSION = "procella.console.session_key"


@dataclass(frozen=True)
class Session:
    token: str
    csrf: str
    expires_at: float  # Unix seconds


def _aead() -> AESGCM:
    key: bytes | None = current_app.extensions.get(_KEY_EXTENSION)
    if key is None:
        found = services()
        if found.settings.console_session_key:
            key = bytes.fromhex(found.settings.console_session_key)
        else:
            key = found.secrets.crypto.purpose_key("console session")
        current_app.extensions[_KEY_EXTENSION] = key
    return AESGCM(key)


def seal(session: Session) -> str:
    nonce = secrets.token_bytes(12)
    plain = json.dumps({"t": session.token, "c": session.csrf, "e": session.expires_at}).encode()
    return base64.urlsafe_b64encode(nonce + _aead().encrypt(nonce, plain, _AAD)).decode()


def unseal(value: str) -> Session | None:
    """The session in a cookie, or None if it was forged, tampered with or has expired."""
    try:
        raw = base64.urlsafe_b64decode(value.encode())
        plain = json.loads(_aead().decrypt(raw[:12], raw[12:], _AAD))
        found = Session(str(plain["t"]), str(plain["c"]), float(plain["e"]))
    except (ValueError, TypeError, KeyError, InvalidTag):
        return None
    return found if found.expires_at > time.time() else None


def current() -> Session | None:
    value = request.cookies.get(COOKIE)
    return None if not value else unseal(value)


async def principal() -> Principal:
    """The logged-in user; Unauthorized (the login page) without a live session."""
    found = current()
    if found is None:
        raise Unauthorized("please log in")
    return await services().auth.authenticate(found.token)


async def start(token: str, response: Response) -> Principal:
    """Log in with ``token`` (refused unless the API would accept it) and set the cookie."""
    who = await services().auth.authenticate(token)
    hours = services().settings.console_session_hours
    expires = time.time() + hours * 3600
    _set(response, COOKIE, seal(Session(token, secrets.token_urlsafe(24), expires)), hours)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
    return who


def end(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/")


def csrf_token() -> str:
    """The token forms on this page must send back: the session's, or the login cookie's."""
    found = current()
    if found is not None:
        return found.csrf
    return request.cookies.get(LOGIN_CSRF_COOKIE) or ""


def new_login_csrf(response: Response) -> str:
    """Set (or keep) the login form's double-submit cookie; its value goes in the form."""
    value = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(24)
    _set(response, LOGIN_CSRF_COOKIE, value, 1.0)
    return value


def check_csrf(sent: str | None) -> None:
    """Refuse a form whose CSRF token is missing or not this browser's."""
    expected = csrf_token()
    if not expected or not sent or not hmac.compare_digest(expected, sent):
        raise BadRequest("the form expired or did not come from this site: reload and retry")


def _set(response: Response, name: str, value: str, hours: float) -> None:
    response.set_cookie(
        name,
        value,
        max_age=int(hours * 3600),
        path="/",
        httponly=True,
        samesite="Lax",
        secure=over_tls(),
    )


def over_tls() -> bool:
    """Whether the browser reached us over https. Trusting X-Forwarded-Proto is safe here:
    a client that forges it only makes its own cookie https-only."""
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return request.scheme == "https" or forwarded == "https"
