"""Encryption of stack secrets for the CLI's "service" secrets provider.

Each stack has its own AES-256-GCM key, derived with HKDF-SHA256 from the master key and the
stack's immutable id, and the stack id is also the associated data. So a renamed stack
still decrypts its secrets, while a stack deleted and created again under the same name
gets a new id and cannot read the old one's. A ciphertext is
``0x01 || nonce (12 bytes) || AES-GCM output (ciphertext + 16-byte tag)``.

The nonce is random, except inside a *scope* (the update that holds the stack, see
SecretsService): there it is synthetic, HMAC-SHA256(nonce key, scope, plaintext) cut to 12
bytes, so one plaintext encrypts to one ciphertext for the rest of that update. The CLI needs
this: it re-encrypts every secret of a checkpoint whenever one of them is new, yet compares
the final checkpoint with a shadow journal that kept each secret's first ciphertext (see
SecretsService). Decryption does not care how a nonce was chosen, so both kinds decrypt alike.
The nonce key is a separate HKDF output, never the AES key; two different plaintexts get the
same synthetic nonce only by an HMAC collision, as likely as two random nonces colliding.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from procella.errors import BadRequest

FORMAT_V1 = 0x01
NONCE_BYTES = 12
TAG_BYTES = 16
_INFO = b"procella stack secrets v1"
_NONCE_INFO = b"procella stack secret nonces v1"


class StackCrypto:
    """Encrypts and decrypts for any stack, given the master key."""

    def __init__(self, master_key: bytes) -> None:
        if len(master_key) != 32:
            raise ValueError("the master key must be 32 bytes")
        self._master = master_key
        # Derived keys are a pure function of (master, stack id): caching cannot go stale.
        self._aead = lru_cache(maxsize=4096)(self._derive)
        self._nonce_key = lru_cache(maxsize=4096)(self._derive_nonce_key)

    def _hkdf(self, info: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(self._master)

    def purpose_key(self, purpose: str) -> bytes:
        """A 32-byte key for another use of the master key (the console's session cookies),
        independent of every stack key: HKDF with an info no stack id can produce."""
        return self._hkdf(b"procella purpose:" + purpose.encode())

    def _derive(self, stack_id: str) -> AESGCM:
        return AESGCM(self._hkdf(_INFO + stack_id.encode()))

    def _derive_nonce_key(self, stack_id: str) -> bytes:
        return self._hkdf(_NONCE_INFO + stack_id.encode())

    def encrypt(self, stack_id: str, plaintext: bytes, *, scope: str | None = None) -> bytes:
        """A fresh random nonce, or with ``scope`` the same ciphertext for the same
        (stack, scope, plaintext) every time."""
        if scope is None:
            nonce = os.urandom(NONCE_BYTES)
        else:
            scope_bytes = scope.encode()
            message = len(scope_bytes).to_bytes(4, "big") + scope_bytes + plaintext
            nonce = hmac.digest(self._nonce_key(stack_id), message, hashlib.sha256)[:NONCE_BYTES]
        sealed = self._aead(stack_id).encrypt(nonce, plaintext, stack_id.encode())
        return bytes([FORMAT_V1]) + nonce + sealed

    def decrypt(self, stack_id: str, ciphertext: bytes) -> bytes:
        if len(ciphertext) < 1 + NONCE_BYTES + TAG_BYTES or ciphertext[0] != FORMAT_V1:
            raise BadRequest("ciphertext is not one this server produced")
        nonce = ciphertext[1 : 1 + NONCE_BYTES]
        try:
            return self._aead(stack_id).decrypt(
                nonce, ciphertext[1 + NONCE_BYTES :], stack_id.encode()
            )
        except InvalidTag:
            raise BadRequest("ciphertext does not belong to this stack or was altered") from None
