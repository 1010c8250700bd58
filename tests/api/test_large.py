"""Large legitimate checkpoints: 50 MB of state, gzipped as the CLI sends it."""

from __future__ import annotations

import json
import os
import time

import pytest

from tests.helpers import (
    DEFAULT_ORG,
    Api,
    assert_ok,
    gz,
    sha256_hex,
    text_edit,
)

# 50 MB checkpoints: seconds per test.
pytestmark = pytest.mark.slow

S = f"{DEFAULT_ORG}/proj/big"
SIZE = 50 * 1024 * 1024


def big_text() -> bytes:
    """A ~50 MB compact deployment: 500 resources, each with a 100 KB output."""
    head = (
        b'{"version":3,"deployment":{"manifest":{"time":"2024-01-01T00:00:00Z","magic":"",'
        b'"version":"v3.259.0"},"resources":['
    )
    parts = [head]
    count = 500
    chunk = SIZE // count
    for i in range(count):
        blob = os.urandom(chunk // 2).hex().encode()
        parts.append(
            (b"," if i else b"")
            + b'{"urn":"urn:pulumi:big::proj::a:b:C::r'
            + str(i).encode()
            + b'","custom":true,"type":"a:b:C","outputs":{"blob":"'
            + blob
            + b'"}}'
        )
    parts.append(b"]}}")
    return b"".join(parts)


async def test_50mb_verbatim_checkpoint_round_trips(api: Api) -> None:
    started = time.monotonic()
    await api.new_stack(S)
    update = await api.started(S)
    text = big_text()
    assert len(text) > SIZE
    body = gz(b'{"version":3,"untypedDeployment":' + text + b',"sequenceNumber":1}')
    assert len(body) > 16 * 1024 * 1024  # above Quart's default MAX_CONTENT_LENGTH
    response = await api.call(
        "PATCH",
        f"{update.path}/checkpointverbatim",
        raw=body,
        lease=update.token,
        headers={"Content-Encoding": "gzip"},
    )
    del body
    await assert_ok(response, 204)
    assert await api.export_bytes(S) == text
    # A small delta on top of the large base, as the CLI sends for the next step.
    at = text.index(b"r499")
    new = text[:at] + b"R499" + text[at + 4 :]
    response = await api.delta(update, [text_edit(at, at + 4, "R499")], sha256_hex(new), 2)
    await assert_ok(response, 204)
    del text
    await assert_ok(await api.complete(update), 204)
    exported = await api.export_bytes(S, update.version)
    assert exported == new
    del exported, new
    [summary] = (await api.list_stacks())["stacks"]
    assert summary["resourceCount"] == 500
    assert time.monotonic() - started < 120


async def test_large_full_checkpoint_and_import(api: Api) -> None:
    """20 MB through the other two state routes (full checkpoint, import)."""
    await api.new_stack(S)
    outputs = {f"k{i}": os.urandom(50_000).hex() for i in range(200)}
    state = {
        "version": 3,
        "deployment": {
            "manifest": {"time": "t", "magic": "", "version": ""},
            "resources": [{"urn": "urn:x", "type": "pulumi:pulumi:Stack", "outputs": outputs}],
        },
    }
    update = await api.started(S)
    await assert_ok(await api.checkpoint(update, state), 204)
    await assert_ok(await api.complete(update), 204)
    assert json.loads(await api.export_bytes(S)) == state
    raw = json.dumps(state, indent=1).encode()
    assert len(raw) > 20 * 1000 * 1000
    await assert_ok(await api.import_state(S, None, raw=raw), 200)
    assert await api.export_bytes(S) == raw
