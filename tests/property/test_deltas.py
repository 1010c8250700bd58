"""procella.state.deltas and the CLI's text edits (procella.state.checkpoints).

``b`` assembled from ``a`` (and the diff of ``a`` to ``b``) applied to ``a`` gives ``b``;
deltas of both kinds chain; the stored encoding gives back the same delta; and a chain
rebuilds exactly the text the CLI's edits made when they were checked against its hash
(``apply_text_edits``, gotextdiff's rules).
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from procella.errors import BadRequest
from procella.state import deltas
from procella.state.checkpoints import TextEdit, apply_text_edits, parse_text_edits
from tests.helpers import text_edit

# A state as the diff sees it: resources one after another, each starting '{"urn":"'.
resource = st.tuples(st.integers(0, 40), st.integers(1, 700), st.sampled_from(b"abcxyz"))
resources = st.lists(resource, max_size=30)


def state_text(items: list[tuple[int, int, int]], head: bytes = b"") -> bytes:
    body = b",".join(
        b'{"urn":"urn:pulumi:dev::p::t::r%d","fill":"%s"}' % (name, bytes([fill]) * size)
        for name, size, fill in items
    )
    return (
        b'{"version":3,"deployment":{"manifest":{"time":"'
        + head
        + b'"},"resources":['
        + body
        + b"]}}"
    )


@st.composite
def changed(draw: st.DrawFn, items: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """A later state: some resources changed, removed, added or moved."""
    out = list(items)
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["change", "remove", "add", "move"]))
        if op == "add" or not out:
            out.insert(draw(st.integers(0, len(out))), draw(resource))
            continue
        at = draw(st.integers(0, len(out) - 1))
        if op == "change":
            out[at] = draw(resource)
        elif op == "remove":
            del out[at]
        else:
            out.insert(draw(st.integers(0, len(out) - 1)), out.pop(at))
    return out


@st.composite
def state_chains(draw: st.DrawFn) -> list[bytes]:
    """Texts of successive steps of an update, or short arbitrary bytes."""
    if draw(st.integers(0, 3)) == 0:
        return draw(st.lists(st.binary(max_size=60), min_size=2, max_size=4))
    items = draw(resources)
    texts = [state_text(items, draw(st.binary(max_size=3)).hex().encode())]
    for _ in range(draw(st.integers(1, 4))):
        items = draw(changed(items))
        texts.append(state_text(items, draw(st.binary(max_size=3)).hex().encode()))
    return texts


@given(state_chains())
def test_b_assembled_from_a_applied_to_a_is_b(texts: list[bytes]) -> None:
    a, b = texts[0], texts[1]
    assembly = deltas.assemble(a, b)
    assert deltas.apply_chain(a, [assembly]) == b
    assert sum(len(p) for p in assembly.parts if isinstance(p, bytes)) <= len(b)
    if a == b:
        assert all(isinstance(p, tuple) for p in assembly.parts)


@given(state_chains(), st.lists(st.booleans(), min_size=4, max_size=4))
def test_deltas_of_both_kinds_chain(texts: list[bytes], assembled: list[bool]) -> None:
    chain = [
        deltas.assemble(a, b) if whole else deltas.diff_at(a, b, deltas.cuts(a), deltas.cuts(b))
        for (a, b), whole in zip(itertools.pairwise(texts), assembled, strict=False)
    ]
    assert deltas.apply_chain(texts[0], chain) == texts[-1]
    # Every prefix of the chain rebuilds its own step, from the stored deltas too.
    stored = [deltas.decode(deltas.encode(delta)) for delta in chain]
    for i in range(len(chain)):
        assert deltas.apply_chain(texts[0], chain[: i + 1]) == texts[i + 1]
        assert deltas.apply_chain(texts[0], stored[: i + 1]) == texts[i + 1]


assemblies = st.builds(
    deltas.Assembly,
    st.lists(
        st.tuples(st.integers(0, 2**64 - 2), st.integers(0, 2**64 - 1)) | st.binary(max_size=9),
        max_size=6,
    ).map(tuple),
)


@given(assemblies)
def test_an_assembly_is_stored_and_read_back(assembly: deltas.Assembly) -> None:
    assert deltas.decode(deltas.encode(assembly)) == assembly


@given(st.binary(max_size=20), assemblies)
def test_an_assembly_applies_only_inside_its_text(base: bytes, assembly: deltas.Assembly) -> None:
    inside = all(isinstance(p, bytes) or 0 <= p[0] <= p[1] <= len(base) for p in assembly.parts)
    if not inside:
        with pytest.raises(ValueError):
            deltas.apply_chain(base, [assembly])
        return
    expected = b"".join(p if isinstance(p, bytes) else base[p[0] : p[1]] for p in assembly.parts)
    assert deltas.apply_chain(base, [assembly]) == expected
    # Over a text made of several pieces (an earlier delta), too.
    split = [TextEdit(len(base) // 2, len(base) // 2, b"")]
    assert deltas.apply_chain(base, [split, assembly]) == expected


edits_strategy = st.lists(
    st.builds(
        TextEdit, st.integers(0, 2**64 - 2), st.integers(0, 2**64 - 1), st.binary(max_size=20)
    ),
    max_size=6,
)


@given(edits_strategy)
def test_encode_decode_round_trip(edits: list[TextEdit]) -> None:
    assert deltas.decode(deltas.encode(edits)) == edits


@st.composite
def edits_on(draw: st.DrawFn) -> tuple[bytes, list[TextEdit]]:
    """A text and edits of it as a client may send them: in any order, maybe
    overlapping, touching or outside the text, maybe several at one offset."""
    base = draw(st.binary(max_size=30) | st.binary(max_size=3))
    offsets = st.integers(0, len(base) + 2)
    edits: list[Any] = []
    for _ in range(draw(st.integers(0, 5))):
        if edits and draw(st.integers(0, 3)) == 0:  # the span of an earlier edit
            start, end = draw(st.sampled_from([(e.start, e.end) for e in edits]))
        else:
            start = draw(offsets)
            end = draw(st.integers(max(0, start - 1), start + 4) | offsets)
        edits.append(TextEdit(start, end, draw(st.binary(max_size=4))))
    return base, edits


@given(edits_on())
def test_a_chain_rebuilds_what_the_clis_edits_made(case: tuple[bytes, list[TextEdit]]) -> None:
    """A delta checkpoint is checked against its hash with ``apply_text_edits`` and stored
    as its edits; rebuilding it later (``apply_chain``) must give the very same text, and
    refuse exactly the edits that were refused."""
    base, edits = case
    try:
        expected = apply_text_edits(base, edits)
    except BadRequest:
        with pytest.raises(ValueError):
            deltas.apply_chain(base, [edits])
        return
    assert deltas.apply_chain(base, [edits]) == expected
    stored = deltas.decode(deltas.encode(edits))
    assert deltas.apply_chain(base, [stored]) == expected


@given(st.lists(edits_on(), min_size=1, max_size=3))
def test_a_chain_of_client_deltas_composes(cases: list[tuple[bytes, list[TextEdit]]]) -> None:
    """Each step's edits are offsets into the text before it."""
    text = cases[0][0]
    chain = []
    for _, raw in cases:
        edits = [TextEdit(min(e.start, len(text)), min(e.end, len(text)), e.new_text) for e in raw]
        try:
            nxt = apply_text_edits(text, edits)
        except BadRequest:
            continue
        chain.append(edits)
        text = nxt
    assert deltas.apply_chain(cases[0][0], chain) == text


wire_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5) | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)


PATHS = [
    ("Span",),
    ("NewText",),
    ("Span", "start"),
    ("Span", "end"),
    ("Span", "start", "offset"),
    ("Span", "end", "offset"),
]


@st.composite
def wire_deltas(draw: st.DrawFn) -> Any:
    """``deploymentDelta`` values: real TextEdits, and ones broken in some place."""
    real = [
        text_edit(draw(st.integers(0, 50)), draw(st.integers(0, 50)), draw(st.text(max_size=5)))
        for _ in range(draw(st.integers(0, 3)))
    ]
    edits: list[Any] = list(real)
    for _ in range(draw(st.integers(0, 2))):
        if not real or draw(st.booleans()):
            edits.insert(draw(st.integers(0, len(edits))), draw(wire_value))
            continue
        node: Any = real[draw(st.integers(0, len(real) - 1))]
        path = draw(st.sampled_from(PATHS))
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node[path[-1]] = draw(wire_value)
    return edits if draw(st.integers(0, 9)) else draw(wire_value)


@given(wire_deltas())
def test_parse_text_edits_takes_text_edits_and_refuses_the_rest(value: Any) -> None:
    try:
        edits = parse_text_edits(value)
    except BadRequest:
        return
    assert isinstance(value, list) and len(edits) == len(value)
    for edit, item in zip(edits, value, strict=True):
        assert edit.start == item["Span"]["start"]["offset"]
        assert edit.end == item["Span"]["end"]["offset"]
        assert edit.new_text == item["NewText"].encode()
        assert type(edit.start) is int and type(edit.end) is int


@st.composite
def cut_sets(draw: st.DrawFn, text: bytes) -> list[int]:
    """Resource cuts, or any increasing offsets (``diff_at`` is right with any)."""
    if draw(st.booleans()):
        return deltas.cuts(text)
    return sorted(set(draw(st.lists(st.integers(0, len(text)), max_size=8))))


@given(state_chains(), st.data())
def test_diff_at_of_a_to_b_applied_to_a_is_b(texts: list[bytes], data: st.DataObject) -> None:
    a, b = texts[0], texts[1]
    edits = deltas.diff_at(a, b, data.draw(cut_sets(a)), data.draw(cut_sets(b)))
    assert deltas.apply_chain(a, [edits]) == b
    assert apply_text_edits(a, edits) == b
    assert sum(len(e.new_text) for e in edits) <= len(b)
    if a == b:
        assert edits == []


@given(state_chains())
def test_diff_at_deltas_chain(texts: list[bytes]) -> None:
    chain = [
        deltas.diff_at(a, b, deltas.cuts(a), deltas.cuts(b)) for a, b in itertools.pairwise(texts)
    ]
    assert deltas.apply_chain(texts[0], chain) == texts[-1]
