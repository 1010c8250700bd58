"""Engine events stored with their step states apart (procella.updates.events)."""

from __future__ import annotations

from procella.updates import events
from tests.helpers import stdout_event, step_event, step_metadata, summary_event


def test_a_same_step_stores_its_state_once_and_joins_back() -> None:
    state = step_metadata("a")
    event = step_event(3, "resOutputsEvent", "same", state, state)
    stored = events.split(event, "resOutputsEvent")
    assert list(stored.states.values()) == [events.compact(state)]
    assert [digest for _, digest in stored.refs] == list(stored.states) * 2
    assert len(stored.body) < 400 and '"old":null' in stored.body and '"new":null' in stored.body
    assert events.join(stored.body, stored.refs, stored.states) == events.compact(event)


def test_a_create_stores_its_new_state_and_keeps_its_null_old() -> None:
    event = step_event(0, "resourcePreEvent", "create", None, step_metadata("b"))
    stored = events.split(event, "resourcePreEvent")
    assert len(stored.refs) == 1 and len(stored.states) == 1
    assert events.join(stored.body, stored.refs, stored.states) == events.compact(event)


def test_an_update_stores_both_states() -> None:
    event = step_event(1, "resOpFailedEvent", "update", step_metadata("c"), step_metadata("c", "w"))
    stored = events.split(event, "resOpFailedEvent")
    assert len(stored.states) == 2
    assert events.join(stored.body, stored.refs, stored.states) == events.compact(event)


def test_other_events_are_stored_whole() -> None:
    for event, kind in ((stdout_event(0), "stdoutEvent"), (summary_event(1, {}), "summaryEvent")):
        stored = events.split(event, kind)
        assert stored == events.Split(events.compact(event), [], {})


def test_states_that_are_not_objects_stay_in_the_event() -> None:
    event = step_event(0, "resourcePreEvent", "same", None, None)
    event["resourcePreEvent"]["metadata"]["old"] = "not an object"
    stored = events.split(event, "resourcePreEvent")
    assert stored.refs == [] and stored.body == events.compact(event)


def test_refs_encode_and_decode() -> None:
    refs = [(10, "ab" * 32), (30, "cd" * 32)]
    assert events.decode_refs(events.encode_refs(refs)) == refs
    assert events.encode_refs([]) is None and events.decode_refs(None) == []
