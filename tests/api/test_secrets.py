"""The "service" secrets provider: encrypt, decrypt and their batch forms."""

from __future__ import annotations

import base64

import pytest

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
