"""procella.api.responses: a large JSON body goes out in pieces, with its length."""

from __future__ import annotations

from procella.api.responses import RESPONSE_PIECE_BYTES, raw_json_response


async def test_a_large_body_is_sent_in_pieces_with_its_whole_length() -> None:
    body = bytes(range(256)) * (3 * RESPONSE_PIECE_BYTES // 256 + 7)
    response = raw_json_response(body)
    assert response.content_length == len(body)
    assert response.mimetype == "application/json"
    pieces = [piece async for piece in response.iter_encode()]
    assert len(pieces) == 4 and max(map(len, pieces)) == RESPONSE_PIECE_BYTES
    assert b"".join(pieces) == body


async def test_a_small_body_is_sent_at_once() -> None:
    body = b'{"version":3}'
    response = raw_json_response(body)
    assert [piece async for piece in response.iter_encode()] == [body]
    assert response.content_length == len(body)
