"""Encryption of stack secrets for the CLI's "service" secrets provider.

Each stack has its own AES-256-GCM key, derived with HKDF-SHA256 from the master key and the
stack's immutable id, and the stack id is also the associated data. So a renamed stack
still decrypts its secrets, while a stack deleted and created again under the same name
gets a new id and cannot read the old one's. A ciphertext is
``0x01 || nonce (12 random bytes) || AES-GCM output (ciphertext + 16-byte tag)``.
"""

from __future__ import annotations

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


class StackCrypto:
    """Encrypts and decrypts for any stack, given the master key."""

    def __init__(self, master_key: bytes) -> None:
        if len(master_key) != 32:
            raise ValueError("the master key must be 32 bytes")
        self._master = master_key
        # Derived keys are a pure function of (master, stack id): caching cannot go stale.
        self._aead = lru_cache(maxsize=4096)(self._derive)

    def _derive(self, stack_id: str) -> AESGCM:
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO + stack_id.encode())
        return AESGCM(hkdf.derive(self._master))

    def encrypt(self, stack_id: str, plaintext: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
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
