"""The "service" secrets provider routes: encrypt, decrypt and their batch forms.

Values travel as standard base64 with padding (Go's encoding of ``[]byte``).
"""

from __future__ import annotations

import binascii
import logging
from typing import Any

from quart import Response

from procella.api.auth import principal, writer_of
from procella.api.body import field, read_json, require_object
from procella.api.context import services
from procella.api.responses import json_response, no_content, stack_ref
from procella.errors import BadRequest

log = logging.getLogger(__name__)
MAX_BATCH = 1000


def _b64decode(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise BadRequest(f"{what} must be a base64 string")
    try:
        # strict_mode: only the alphabet and correct padding (as Go's decoder), and fast.
        return binascii.a2b_base64(value, strict_mode=True)
    except ValueError:  # binascii.Error, or non-ASCII text
        raise BadRequest(f"{what} is not valid base64") from None


def _b64encode(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode()


async def _body() -> dict[str, Any]:
    return require_object(await read_json(services().settings.max_inflated_bytes))


def _batch(body: dict[str, Any], name: str) -> list[Any]:
    items: list[Any] = field(body, name, list)
    if len(items) > MAX_BATCH:
        raise BadRequest(f"at most {MAX_BATCH} values per batch")
    return items


async def encrypt(org: str, project: str, stack: str) -> Response:
    caller = await writer_of(org, project, stack)
    plaintext = _b64decode((await _body()).get("plaintext"), "plaintext")
    [ciphertext] = await services().secrets.encrypt(
        caller, stack_ref(org, project, stack), [plaintext]
    )
    return json_response({"ciphertext": _b64encode(ciphertext)})


async def decrypt(org: str, project: str, stack: str) -> Response:
    caller = await writer_of(org, project, stack)
    ciphertext = _b64decode((await _body()).get("ciphertext"), "ciphertext")
    [plaintext] = await services().secrets.decrypt(
        caller, stack_ref(org, project, stack), [ciphertext]
    )
    return json_response({"plaintext": _b64encode(plaintext)})


async def batch_encrypt(org: str, project: str, stack: str) -> Response:
    caller = await writer_of(org, project, stack)
    items = _batch(await _body(), "plaintexts")
    plaintexts = [_b64decode(v, f"plaintexts[{i}]") for i, v in enumerate(items)]
    ciphertexts = await services().secrets.encrypt(
        caller, stack_ref(org, project, stack), plaintexts
    )
    return json_response({"ciphertexts": [_b64encode(c) for c in ciphertexts]})


async def batch_decrypt(org: str, project: str, stack: str) -> Response:
    caller = await writer_of(org, project, stack)
    items = _batch(await _body(), "ciphertexts")
    ciphertexts = [_b64decode(v, f"ciphertexts[{i}]") for i, v in enumerate(items)]
    plaintexts = await services().secrets.decrypt(
        caller, stack_ref(org, project, stack), ciphertexts
    )
    # Keyed by the ciphertext exactly as sent: the CLI looks each one up by that string.
    return json_response(
        {"plaintexts": {k: _b64encode(p) for k, p in zip(items, plaintexts, strict=True)}}
    )


async def log_decryption(org: str, project: str, stack: str) -> Response:
    """The CLI reports here that it showed secrets it decrypted itself (a passphrase or
    cloud KMS provider): ``{"secretName"}`` or ``{"commandName"}``, or no body."""
    caller = await principal()
    body = await read_json(services().settings.max_inflated_bytes, empty={})
    named = (
        [body.get(key) for key in ("secretName", "commandName")] if isinstance(body, dict) else []
    )
    what = next((name[:200] for name in named if isinstance(name, str) and name), "unnamed")
    await services().secrets.log_decryption(caller, stack_ref(org, project, stack), what)
    log.info("secrets shown: stack=%s/%s/%s user=%s", org, project, stack, caller.login)
    return no_content()
