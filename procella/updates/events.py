"""Engine events stored with their resource states apart, so an update stores O(change).

The CLI sends an event before and after every step (``resourcePreEvent``, then
``resOutputsEvent`` or ``resOpFailedEvent``), each with the resource's old and new state:
inputs and outputs in full, for ``same`` steps too. A 10-resource change on a 1000-resource
stack sends the whole state four times over. Stored as sent, every update costs O(state).

So the states are taken out of the event (``split``) and stored once by content
(``event_states``, keyed by their SHA-256), and the event keeps ``null`` in their place and
where each goes (``Split.refs``). A state seen by an earlier update of any stack, or earlier
in this one, costs nothing more: a ``same`` step's states are the previous update's. ``join``
puts them back by slicing, without parsing the event again, into exactly the compact JSON
the event was stored as.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any

# The events that describe a step, and the two states each may carry in its metadata.
STEP_EVENTS = ("resourcePreEvent", "resOutputsEvent", "resOpFailedEvent")
SIDES = ("old", "new")
_NULL = "null"


@dataclass(frozen=True)
class Split:
    body: str  # the event as compact JSON, each state taken out replaced by null
    refs: list[tuple[int, str]]  # (offset of that null in body, digest of the state), ascending
    states: dict[str, str]  # digest -> the state as compact JSON


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def split(event: dict[str, Any], kind: str) -> Split:
    """The event as stored: compact JSON with its step states apart."""
    metadata = event[kind].get("metadata") if kind in STEP_EVENTS else None
    taken: dict[str, str] = {}  # placeholder -> state text
    if isinstance(metadata, dict):
        metadata = dict(metadata)
        for side in SIDES:
            if isinstance(metadata.get(side), dict):
                # A random placeholder no client can have put in the event: its one
                # occurrence in the text marks where the state goes.
                placeholder = f"procella-state-{secrets.token_hex(16)}"
                taken[placeholder] = compact(metadata[side])
                metadata[side] = placeholder
    if not taken:
        return Split(compact(event), [], {})
    text = compact({**event, kind: {**event[kind], "metadata": metadata}})
    found = sorted((text.index(f'"{p}"'), p) for p in taken)
    body, refs, states, start = [], [], {}, 0
    shift = 0
    for offset, placeholder in found:
        state = taken[placeholder]
        digest = hashlib.sha256(state.encode()).hexdigest()
        states[digest] = state
        body.append(text[start:offset])
        refs.append((offset - shift, digest))
        body.append(_NULL)
        start = offset + len(placeholder) + 2
        shift += len(placeholder) + 2 - len(_NULL)
    body.append(text[start:])
    return Split("".join(body), refs, states)


def join(body: str, refs: list[tuple[int, str]], states: dict[str, str]) -> str:
    """The event as it was stored before ``split``: each ``null`` of ``refs`` replaced by
    its state."""
    pieces, start = [], 0
    for offset, digest in refs:
        pieces.append(body[start:offset])
        pieces.append(states[digest])
        start = offset + len(_NULL)
    pieces.append(body[start:])
    return "".join(pieces)


def encode_refs(refs: list[tuple[int, str]]) -> str | None:
    return compact(refs) if refs else None


def decode_refs(text: str | None) -> list[tuple[int, str]]:
    return [(int(offset), str(digest)) for offset, digest in json.loads(text)] if text else []
