"""procella.secrets.crypto: per-stack AES-256-GCM."""

from __future__ import annotations

import pytest

from procella.errors import BadRequest
from procella.secrets.crypto import FORMAT_V1, NONCE_BYTES, TAG_BYTES, StackCrypto

KEY = bytes(range(32))


@pytest.fixture
def crypto() -> StackCrypto:
    return StackCrypto(KEY)


@pytest.mark.parametrize("plaintext", [b"", b"s3cr3t", bytes(range(256)) * 4, "\u00e9".encode()])
def test_round_trip(crypto: StackCrypto, plaintext: bytes) -> None:
    ciphertext = crypto.encrypt("stack-1", plaintext)
    assert crypto.decrypt("stack-1", ciphertext) == plaintext


def test_format(crypto: StackCrypto) -> None:
    ciphertext = crypto.encrypt("stack-1", b"hello")
    assert ciphertext[0] == FORMAT_V1 == 0x01
    assert len(ciphertext) == 1 + NONCE_BYTES + len(b"hello") + TAG_BYTES
    assert b"hello" not in ciphertext


def test_nonces_are_random(crypto: StackCrypto) -> None:
    one = crypto.encrypt("s", b"same")
    two = crypto.encrypt("s", b"same")
    assert one != two
    assert one[1 : 1 + NONCE_BYTES] != two[1 : 1 + NONCE_BYTES]


def test_wrong_stack_id(crypto: StackCrypto) -> None:
    ciphertext = crypto.encrypt("stack-1", b"x")
    with pytest.raises(BadRequest):
        crypto.decrypt("stack-2", ciphertext)


def test_other_master_key(crypto: StackCrypto) -> None:
    ciphertext = crypto.encrypt("stack-1", b"x")
    with pytest.raises(BadRequest):
        StackCrypto(bytes(32)).decrypt("stack-1", ciphertext)


def test_every_tampered_byte_is_detected(crypto: StackCrypto) -> None:
    ciphertext = crypto.encrypt("stack-1", b"attack at dawn")
    for i in range(len(ciphertext)):
        tampered = bytearray(ciphertext)
        tampered[i] ^= 0x01
        with pytest.raises(BadRequest):
            crypto.decrypt("stack-1", bytes(tampered))


@pytest.mark.parametrize("cut", [0, 1, 1 + NONCE_BYTES, 1 + NONCE_BYTES + TAG_BYTES - 1])
def test_short_ciphertexts(crypto: StackCrypto, cut: int) -> None:
    ciphertext = crypto.encrypt("s", b"")
    with pytest.raises(BadRequest):
        crypto.decrypt("s", ciphertext[:cut])


def test_truncated_ciphertext(crypto: StackCrypto) -> None:
    ciphertext = crypto.encrypt("s", b"0123456789")
    with pytest.raises(BadRequest):
        crypto.decrypt("s", ciphertext[:-1])
    with pytest.raises(BadRequest):
        crypto.decrypt("s", ciphertext + b"\x00")


def test_unknown_format_byte(crypto: StackCrypto) -> None:
    ciphertext = crypto.encrypt("s", b"x")
    for first in (0x00, 0x02, 0xFF):
        with pytest.raises(BadRequest):
            crypto.decrypt("s", bytes([first]) + ciphertext[1:])


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_master_key_must_be_32_bytes(size: int) -> None:
    with pytest.raises(ValueError):
        StackCrypto(bytes(size))


def test_keys_differ_per_stack(crypto: StackCrypto) -> None:
    """Swapping the associated data is not enough: the keys themselves differ per stack."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    ciphertext = crypto.encrypt("stack-1", b"x")
    nonce, sealed = ciphertext[1 : 1 + NONCE_BYTES], ciphertext[1 + NONCE_BYTES :]
    with pytest.raises(Exception):  # noqa: B017 - InvalidTag: the master key is not the key
        AESGCM(KEY).decrypt(nonce, sealed, b"stack-1")
