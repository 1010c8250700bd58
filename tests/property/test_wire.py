"""procella.api.wire: the request shapes it validates and the JSON it serves back.

``new_update`` takes any JSON and gives an update the server can store and serve, or a
``BadRequest``; ``stored_json``/``standard_json``/``update_info`` serve any text the
server ever stored as standard JSON (older rows may hold NaN or Infinity).
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from procella import strictjson
from procella.api import wire
from procella.errors import BadRequest
from procella.metadata.base import UpdateRecord
from procella.strictjson import MAX_DEPTH
from procella.updates.models import UPDATE_KINDS, WIRE_STATUS
from tests.property.strategies import (
    any_json,
    any_text,
    json_values,
    mutated,
    plain_text,
    reference_depth,
)

program_body = st.fixed_dictionaries(
    {
        "name": plain_text,
        "runtime": st.sampled_from(["python", "nodejs", "go"]),
        "main": plain_text,
        "description": plain_text,
        "options": st.fixed_dictionaries(
            {"dryRun": st.booleans(), "parallel": st.integers(0, 64), "color": plain_text}
        ),
        "config": st.dictionaries(
            plain_text,
            st.fixed_dictionaries({"string": plain_text, "secret": st.booleans()}),
            max_size=3,
        ),
        "metadata": st.fixed_dictionaries(
            {
                "message": any_text,
                "environment": st.dictionaries(plain_text, any_text, max_size=3),
            }
        ),
    }
)


@given(st.sampled_from(UPDATE_KINDS), program_body)
def test_a_valid_update_request_is_read_as_sent(kind: str, body: dict[str, Any]) -> None:
    new = wire.new_update(kind, body)
    assert new.kind == kind
    assert new.is_preview == (kind == "preview" or body["options"]["dryRun"])
    assert new.config == body["config"]
    assert new.metadata == body["metadata"]
    assert new.program == {
        k: body[k] for k in ("name", "runtime", "main", "description", "options")
    }


@given(st.sampled_from(UPDATE_KINDS), program_body.flatmap(mutated) | any_json)
def test_any_update_request_is_storable_or_refused(kind: str, body: Any) -> None:
    try:
        new = wire.new_update(kind, body)
    except BadRequest:
        return
    assert isinstance(body, dict)
    # The service stores these three as JSON and serves them back to Go.
    for part in (new.program, new.config, new.metadata):
        text = json.dumps(part, allow_nan=False)
        assert strictjson.stored_json(text) == part
        assert strictjson.loads(text.encode()) == part
    assert isinstance(new.metadata["message"], str)
    assert all(isinstance(v, str) for v in new.metadata["environment"].values())
    for value in new.config.values():
        assert isinstance(value, dict) and isinstance(value.get("string", ""), str)
    options = body.get("options") or {}
    assert new.is_preview == (kind == "preview" or options.get("dryRun") is True)


def _finite(value: Any) -> Any:
    """``value`` with NaN and ±Infinity read as null, as Go does."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


stored_values = json_values(
    st.none() | st.booleans() | st.integers() | st.floats() | any_text | st.just("NaN"),
    plain_text | st.just("Infinity"),
)


@given(stored_values)
def test_stored_json_is_served_as_standard_json(value: Any) -> None:
    text = json.dumps(value)  # as older rows were written: NaN and Infinity allowed
    served = strictjson.standard_json(text)
    parsed = strictjson.loads(served.encode())
    assert parsed == _finite(value)
    assert strictjson.stored_json(text) == _finite(value)


@given(st.integers(MAX_DEPTH - 2, MAX_DEPTH + 2), st.booleans())
def test_stored_json_nested_too_deeply_reads_as_null(levels: int, nan: bool) -> None:
    value: Any = float("nan") if nan else 1
    for _ in range(levels):
        value = [value]
    text = json.dumps(value)
    served = strictjson.standard_json(text)
    if levels > MAX_DEPTH:
        assert strictjson.stored_json(text) is None
        if nan:
            assert served == "null"
    else:
        assert reference_depth(strictjson.stored_json(text)) == levels
        assert strictjson.loads(served.encode()) == _finite(value)


@given(
    st.sampled_from(sorted(WIRE_STATUS)),
    st.dictionaries(plain_text, stored_values, max_size=3),
    stored_values,
    st.none() | st.dictionaries(st.sampled_from(["create", "update", "same"]), stored_values),
    st.none() | st.integers(-1, 10),
    st.none() | st.integers(0, 2**62),
)
def test_update_info_is_standard_json_for_anything_stored(
    status: str,
    metadata: dict[str, Any],
    config: Any,
    changes: dict[str, Any] | None,
    count: int | None,
    ended: int | None,
) -> None:
    record = UpdateRecord(
        id="0" * 32,
        stack_id="s",
        kind="update",
        is_preview=False,
        status=status,
        version=1,
        created_by="u",
        created_at=1_700_000_000_000,
        started_at=None,
        ended_at=ended,
        lease_hash=None,
        lease_expires_at=None,
        lease_live=False,
        checkpoint_seq=0,
        checkpoint_sha=None,
        program="{}",
        config=json.dumps(config),
        metadata=json.dumps(metadata),
        resource_changes=None if changes is None else json.dumps(changes),
        resource_count=count,
    )
    info = wire.update_info(record)
    json.dumps(info, allow_nan=False)  # json_response would fail with a 500
    assert info["endTime"] == (0 if ended is None else ended // 1000)
    assert ("resourceCount" in info) == (count is not None and count >= 0)
    status_body = wire.update_status(record)
    assert (status_body["continuationToken"] is None) == (ended is not None)


@pytest.mark.parametrize("ms", [None, 0, 999, 1000, 1_700_000_000_123])
def test_seconds(ms: int | None) -> None:
    assert wire.seconds(ms) == (0 if ms is None else ms // 1000)
