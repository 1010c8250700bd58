"""The "service" secrets provider: encrypt, decrypt and their batch forms."""

from __future__ import annotations

import base64

import pytest

from procella.secrets.crypto import NONCE_BYTES, StackCrypto
from tests.helpers import DEFAULT_ORG, Api, assert_error, assert_ok, b64, body_json, unb64

A = f"{DEFAULT_ORG}/proj/a"
B = f"{DEFAULT_ORG}/proj/b"


@pytest.fixture
async def stacks(api: Api) -> tuple[str, str]:
    return await api.new_stack(A), await api.new_stack(B)


async def test_encrypt_decrypt_round_trip(api: Api, stacks) -> None:
    for plaintext in (b"s3cr3t", b"", b"\x00\xff" * 100, "caf\u00e9".encode(), b"x" * 100_000):
        response = await api.encrypt(A, plaintext)
        assert response.status_code == 200
        ciphertext = (await body_json(response))["ciphertext"]
        assert isinstance(ciphertext, str)
        raw = unb64(ciphertext)  # standard base64 with padding
        assert plaintext not in raw or plaintext == b""
        response = await api.decrypt(A, ciphertext)
        assert response.status_code == 200
        assert unb64((await body_json(response))["plaintext"]) == plaintext


async def test_encryption_is_randomized(api: Api, stacks) -> None:
    one = await api.encrypt_one(A, b"same")
    two = await api.encrypt_one(A, b"same")
    assert one != two


async def encrypt_all(api: Api, stack: str, plaintexts: list[bytes]) -> list[str]:
    ciphertexts: list[str] = (await body_json(await api.batch_encrypt(stack, plaintexts)))[
        "ciphertexts"
    ]
    assert len(ciphertexts) == len(plaintexts)
    return ciphertexts


async def decrypt_all(api: Api, stack: str, ciphertexts: list[str]) -> list[bytes]:
    plaintexts = (await body_json(await api.batch_decrypt(stack, ciphertexts)))["plaintexts"]
    return [unb64(plaintexts[c]) for c in ciphertexts]


async def test_during_an_update_a_plaintext_keeps_its_ciphertext(api: Api, stacks) -> None:
    """Without journaling the CLI re-encrypts every secret of a checkpoint as soon as one of
    them is new (one `batch-encrypt` with all of them), then compares the last checkpoint
    with a shadow journal that kept the ciphertexts of the earlier call: within one update,
    the same plaintext must give the same ciphertext, or the CLI reports "snapshot
    mismatch"."""
    update = await api.started(A)
    first = await encrypt_all(api, A, [b"provider", b"password"])
    # The next checkpoint: the same two secrets again, a new one in between, a duplicate.
    second = await encrypt_all(api, A, [b"provider", b"new", b"password", b"provider"])
    assert second[0] == second[3] == first[0]
    assert second[2] == first[1]
    assert len({first[0], first[1], second[1]}) == 3
    assert await api.encrypt_one(A, b"password") == first[1]  # the per-value route too
    assert await decrypt_all(api, A, second) == [b"provider", b"new", b"password", b"provider"]

    # Another update: the same ciphertexts, so an unchanged secret leaves the state as it was.
    await assert_ok(await api.complete(update), 204)
    after = await encrypt_all(api, A, [b"provider", b"provider"])  # no update: random
    assert len({after[0], after[1], first[0]}) == 3
    later = await api.started(A)
    assert await encrypt_all(api, A, [b"provider", b"password"]) == first
    # Old ciphertexts, random or made during an earlier update, still decrypt.
    old = await decrypt_all(api, A, [*first, *after])
    assert old == [b"provider", b"password", b"provider", b"provider"]
    await assert_ok(await api.complete(later), 204)


async def test_ciphertexts_can_be_kept_to_one_update(custom_app) -> None:
    """With ``secrets_stable_across_updates`` off, nothing links a value across updates."""
    async with custom_app(secrets_stable_across_updates=False) as (_, api):
        await api.new_stack(A)
        update = await api.started(A)
        first = await encrypt_all(api, A, [b"provider", b"password"])
        assert await encrypt_all(api, A, [b"password", b"provider"]) == first[::-1]
        await assert_ok(await api.complete(update), 204)
        later = await api.started(A)
        again = await encrypt_all(api, A, [b"provider", b"password"])
        assert again[0] != first[0] and again[1] != first[1]
        assert await encrypt_all(api, A, [b"password"]) == [again[1]]
        assert await decrypt_all(api, A, [*first, *again]) == [b"provider", b"password"] * 2
        await assert_ok(await api.complete(later), 204)


async def test_update_scoped_ciphertexts_stay_per_stack(api: Api, stacks) -> None:
    in_a, in_b = await api.started(A), await api.started(B)
    [a] = await encrypt_all(api, A, [b"same"])
    [b] = await encrypt_all(api, B, [b"same"])
    assert a != b and unb64(a)[1 : 1 + NONCE_BYTES] != unb64(b)[1 : 1 + NONCE_BYTES]
    await assert_error(await api.decrypt(B, a), 400)
    for update in (in_a, in_b):
        await assert_ok(await api.complete(update), 204)


async def test_a_preview_does_not_scope_encryption(api: Api, stacks) -> None:
    """A preview does not hold the stack and writes no state: encryption stays random."""
    preview = await api.started(A, "preview", dry_run=True)
    one, two = await encrypt_all(api, A, [b"same", b"same"])
    assert one != two
    await assert_ok(await api.complete(preview), 204)


def test_scoped_nonces_are_keyed_and_bound_to_their_scope() -> None:
    crypto = StackCrypto(bytes(range(32)))
    one = crypto.encrypt("stack-1", b"value", scope="u1")
    assert crypto.encrypt("stack-1", b"value", scope="u1") == one
    assert crypto.decrypt("stack-1", one) == b"value"
    nonces = {
        c[1 : 1 + NONCE_BYTES]
        for c in (
            one,
            crypto.encrypt("stack-1", b"value", scope="u2"),
            crypto.encrypt("stack-1", b"value2", scope="u1"),
            crypto.encrypt("stack-2", b"value", scope="u1"),
            # The scope is length-prefixed: ("u1", "2value") is not ("u12", "value").
            crypto.encrypt("stack-1", b"2value", scope="u1"),
            crypto.encrypt("stack-1", b"value", scope="u12"),
            StackCrypto(bytes(32)).encrypt("stack-1", b"value", scope="u1"),
        )
    }
    assert len(nonces) == 7
    assert crypto.encrypt("stack-1", b"value") != crypto.encrypt("stack-1", b"value")


async def test_batch_encrypt_keeps_order(api: Api, stacks) -> None:
    plaintexts = [f"value-{i}".encode() for i in range(50)] + [b"value-3", b""]
    response = await api.batch_encrypt(A, plaintexts)
    assert response.status_code == 200
    ciphertexts = (await body_json(response))["ciphertexts"]
    assert len(ciphertexts) == len(plaintexts)
    for ciphertext, plaintext in zip(ciphertexts, plaintexts, strict=True):
        decrypted = await body_json(await api.decrypt(A, ciphertext))
        assert unb64(decrypted["plaintext"]) == plaintext


async def test_batch_decrypt_is_keyed_by_the_exact_ciphertexts(api: Api, stacks) -> None:
    c1 = await api.encrypt_one(A, b"one")
    c2 = await api.encrypt_one(A, b"two")
    # Duplicates are allowed; the map has one key per distinct ciphertext.
    response = await api.batch_decrypt(A, [c1, c2, c1])
    assert response.status_code == 200
    plaintexts = (await body_json(response))["plaintexts"]
    assert plaintexts == {c1: b64(b"one"), c2: b64(b"two")}


async def test_batch_decrypt_of_nothing(api: Api, stacks) -> None:
    response = await api.batch_decrypt(A, [])
    assert await body_json(response) == {"plaintexts": {}}
    response = await api.batch_encrypt(A, [])
    assert await body_json(response) == {"ciphertexts": []}


async def test_batch_routes_accept_plain_bodies_too(api: Api, stacks) -> None:
    c1 = await api.encrypt_one(A, b"one")
    response = await api.call(
        "POST", f"/api/stacks/{A}/batch-decrypt", {"ciphertexts": [c1]}, gzip_body=False
    )
    assert (await body_json(response))["plaintexts"] == {c1: b64(b"one")}


async def test_ciphertexts_of_one_stack_do_not_decrypt_under_another(api: Api, stacks) -> None:
    ciphertext = await api.encrypt_one(A, b"for a only")
    await assert_error(await api.decrypt(B, ciphertext), 400)
    await assert_error(await api.batch_decrypt(B, [ciphertext]), 400)
    other = await api.encrypt_one(B, b"for b")
    # One foreign value fails the whole batch, with a 4xx and no partial answer.
    await assert_error(await api.batch_decrypt(B, [other, ciphertext]), 400)


async def test_tampered_ciphertexts_are_400(api: Api, stacks) -> None:
    ciphertext = unb64(await api.encrypt_one(A, b"value"))
    for bad in (
        ciphertext[:-1] + bytes([ciphertext[-1] ^ 1]),
        ciphertext[:10],
        b"",
        bytes([0x02]) + ciphertext[1:],
        b"\x01" + b"\x00" * 40,
    ):
        await assert_error(await api.decrypt(A, base64.b64encode(bad).decode()), 400)
    for text in ("not base64!", "YWJj", "YWJjZA", 5, None):
        response = await api.call("POST", f"/api/stacks/{A}/decrypt", {"ciphertext": text})
        await assert_error(response, 400)


async def test_recreated_stack_cannot_read_the_old_secrets(api: Api, stacks) -> None:
    ciphertext = await api.encrypt_one(A, b"old")
    await assert_ok(await api.call("DELETE", f"/api/stacks/{A}", query={"force": "true"}), 204)
    await api.new_stack(A)
    await assert_error(await api.decrypt(A, ciphertext), 400)
    await assert_error(await api.batch_decrypt(A, [ciphertext]), 400)


async def test_secrets_of_a_missing_stack_are_404(api: Api) -> None:
    missing = f"{DEFAULT_ORG}/proj/missing"
    await assert_error(await api.encrypt(missing, b"x"), 404)
    await assert_error(await api.decrypt(missing, b64(b"x" * 40)), 404)
    await assert_error(await api.batch_encrypt(missing, [b"x"]), 404)
    await assert_error(await api.batch_decrypt(missing, [b64(b"x" * 40)]), 404)


async def test_secret_bodies_are_validated(api: Api, stacks) -> None:
    for path, body in (
        ("encrypt", {}),
        ("encrypt", {"plaintext": 5}),
        ("encrypt", {"plaintext": "@@@"}),
        ("encrypt", []),
        ("batch-encrypt", {"plaintexts": "abc"}),
        ("batch-encrypt", {"plaintexts": [1]}),
        ("batch-encrypt", {}),
        ("batch-decrypt", {"ciphertexts": {"a": 1}}),
        ("batch-decrypt", {"ciphertexts": [None]}),
        ("batch-decrypt", {}),
    ):
        response = await api.call("POST", f"/api/stacks/{A}/{path}", body)
        await assert_error(response, 400)


async def test_batches_have_a_limit(api: Api, stacks) -> None:
    await assert_ok(await api.batch_encrypt(A, [b"x"] * 1000), 200)
    await assert_error(await api.batch_encrypt(A, [b"x"] * 1001), 400)


async def test_log_decryption_calls(api: Api, stacks) -> None:
    for path, body in (
        ("decrypt/log-decryption", {"secretName": "dbPassword"}),
        ("decrypt/log-batch-decryption", {"commandName": "stack output"}),
    ):
        response = await api.call("POST", f"/api/stacks/{A}/{path}", body)
        await assert_ok(response, 204)
        await assert_error(
            await api.call("POST", f"/api/stacks/{DEFAULT_ORG}/proj/nope/{path}", body), 404
        )


async def test_non_ascii_base64_is_400(api: Api, stacks) -> None:
    for path, body in (
        ("encrypt", {"plaintext": "caf\u00e9"}),
        ("encrypt", {"plaintext": "\ud800"}),
        ("decrypt", {"ciphertext": "\u00e9\u00e9\u00e9\u00e9"}),
        ("batch-encrypt", {"plaintexts": ["\u00e9"]}),
        ("batch-decrypt", {"ciphertexts": ["\u00e9"]}),
    ):
        response = await api.call("POST", f"/api/stacks/{A}/{path}", body)
        await assert_error(response, 400)
