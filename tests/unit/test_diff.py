"""``deltas.diff`` on states of realistic size: a journal's rebuilt state is stored as its
diff from the base (``States.materialize``), so a few changed resources of a large stack
must cost a few resources' worth of edits, whatever lies between them.

The property tests (tests/property/test_deltas.py) check that any diff applies; texts
that small never reach the resource alignment or the chunked prefix and suffix scans.
"""

from __future__ import annotations

from collections.abc import Sequence

from procella.state import deltas
from procella.state.checkpoints import TextEdit, apply_text_edits

PADDING = "x" * 250  # a resource of about 300 bytes, as a small real one is


def state(count: int, changed: dict[int, str] | None = None, extra: Sequence[int] = ()) -> bytes:
    """A deployment of ``count`` resources; ``changed`` gives some another output, and
    ``extra`` inserts new resources after the ones numbered."""
    changed = changed or {}
    parts = []
    for i in range(count):
        value = changed.get(i, PADDING)
        parts.append(
            f'{{"urn":"urn:pulumi:dev::web::aws:s3:Bucket::b{i}","outputs":{{"v":"{value}"}}}}'
        )
        if i in extra:
            parts.append(f'{{"urn":"urn:pulumi:dev::web::aws:s3:Bucket::new{i}","outputs":{{}}}}')
    return ('{"version":3,"deployment":{"resources":[' + ",".join(parts) + "]}}").encode()


def inserted(edits: list[TextEdit]) -> int:
    return sum(len(edit.new_text) for edit in edits)


def test_resources_changed_far_apart_cost_only_themselves() -> None:
    old = state(2000)
    # Resources 1000 and 1040 changed: the bytes between them (about 12 KB) are equal,
    # and long runs before and after too (far over the 64 KiB chunk of the scans).
    new = state(2000, {1000: "y" * 250, 1040: "z" * 250})
    edits = deltas.diff(old, new)
    assert apply_text_edits(old, edits) == new
    assert inserted(edits) <= 2 * 300
    assert len(edits) == 2


def test_added_and_removed_resources_are_aligned_by_their_boundaries() -> None:
    old = state(600)
    new = state(600, {300: "changed"}, extra=[310, 350])
    edits = deltas.diff(old, new)
    assert apply_text_edits(old, edits) == new
    assert inserted(edits) < 3 * 300  # the two new resources and the changed one
    assert apply_text_edits(new, deltas.diff(new, old)) == old


def test_equal_texts_have_no_edits_and_a_small_change_is_one() -> None:
    old = state(300)
    assert deltas.diff(old, old) == []
    new = state(300, {150: PADDING[:-1] + "y"})
    edits = deltas.diff(old, new)
    assert len(edits) == 1 and apply_text_edits(old, edits) == new
