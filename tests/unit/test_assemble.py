"""``deltas.assemble`` on states of realistic size: a journal's rebuilt state is stored as
an Assembly of its base (``States.materialize``), so an update that changes a few
resources of a large stack must cost those resources, wherever the others moved to.

The property tests (tests/property/test_deltas.py) check that any assembly applies;
texts that small never reach the resource alignment or the chunked prefix and suffix scans.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from procella.state import deltas

PADDING = "x" * 250  # a resource of about 300 bytes, as a small real one is


def state(
    count: int,
    changed: dict[int, str] | None = None,
    extra: Sequence[int] = (),
    order: Sequence[int] | None = None,
) -> bytes:
    """A deployment of ``count`` resources (in ``order``); ``changed`` gives some another
    output, and ``extra`` inserts new resources after the ones numbered."""
    changed = changed or {}
    parts = []
    for i in order if order is not None else range(count):
        value = changed.get(i, PADDING)
        parts.append(
            f'{{"urn":"urn:pulumi:dev::web::aws:s3:Bucket::b{i}","outputs":{{"v":"{value}"}}}}'
        )
        if i in extra:
            parts.append(f'{{"urn":"urn:pulumi:dev::web::aws:s3:Bucket::new{i}","outputs":{{}}}}')
    return ('{"version":3,"deployment":{"resources":[' + ",".join(parts) + "]}}").encode()


def added(assembly: deltas.Assembly) -> int:
    """The new bytes an assembly carries (a range of the old text costs 16 bytes)."""
    return sum(len(part) for part in assembly.parts if isinstance(part, bytes))


def check(old: bytes, new: bytes) -> deltas.Assembly:
    assembly = deltas.assemble(old, new)
    assert deltas.apply_chain(old, [assembly]) == new
    assert deltas.decode(deltas.encode(assembly)) == assembly
    return assembly


def test_resources_changed_far_apart_cost_only_themselves() -> None:
    old = state(2000)
    # Resources 1000 and 1040 changed: the bytes between them (about 12 KB) are equal,
    # and long runs before and after too (far over the 64 KiB chunk of the scans).
    assembly = check(old, state(2000, {1000: "y" * 250, 1040: "z" * 250}))
    assert added(assembly) <= 2 * 300
    assert len(assembly.parts) == 5  # kept, changed, kept, changed, kept


def test_resources_in_another_order_cost_only_the_changed_ones() -> None:
    """Replay writes resources in the order their steps finished: a change of 10 of 1000
    moves nearly all of them, and each moved run costs one range, not its bytes."""
    order = list(range(1000))
    random.Random(7).shuffle(order)
    old = state(1000)
    new = state(1000, {i: "changed" for i in range(0, 1000, 100)}, order=order)
    assembly = check(old, new)
    assert added(assembly) <= 10 * 300 + 300  # the changed ones, and the last one moved
    assert len(deltas.encode(assembly)) < len(new) // 10


def test_added_and_removed_resources_are_aligned_by_their_boundaries() -> None:
    old = state(600)
    new = state(600, {300: "changed"}, extra=[310, 350])
    assert added(check(old, new)) < 3 * 300  # the two new resources and the changed one
    # Removals are left out; the common prefix and suffix end inside resources, so at most
    # two resources' worth of new bytes.
    assert added(check(new, old)) < 2 * 300


def test_equal_texts_are_one_range_and_a_small_change_is_one_part() -> None:
    old = state(300)
    assert check(old, old).parts == ((0, len(old)),)
    new = state(300, {150: PADDING[:-1] + "y"})
    assembly = check(old, new)
    assert len(assembly.parts) == 3 and added(assembly) <= 300
