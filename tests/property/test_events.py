"""Any step event, whatever its states hold, reads back exactly as it was stored."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from procella.updates import events
from tests.property.strategies import any_json

states = st.none() | st.dictionaries(st.text(max_size=8), any_json, max_size=4) | any_json


@given(
    kind=st.sampled_from([*events.STEP_EVENTS, "stdoutEvent"]),
    old=states,
    new=states,
    extra=st.dictionaries(st.text(max_size=8), any_json, max_size=3),
)
def test_split_then_join_gives_the_compact_event(
    kind: str, old: Any, new: Any, extra: dict[str, Any]
) -> None:
    event = {"sequence": 1, **extra, kind: {"metadata": {**extra, "old": old, "new": new}}}
    stored = events.split(event, kind)
    assert events.join(stored.body, stored.refs, stored.states) == events.compact(event)
    kept = [side for side in (old, new) if isinstance(side, dict)]
    assert len(stored.refs) == (len(kept) if kind in events.STEP_EVENTS else 0)
