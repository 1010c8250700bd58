"""The per-replica cache of checkpoint texts."""

from __future__ import annotations

from procella.state.cache import CheckpointCache


def test_a_stack_keeps_only_its_newest_text() -> None:
    cache = CheckpointCache(1000)
    cache.put("a1", b"one", "stack-a")
    cache.put("b1", b"uno", "stack-b")
    cache.put("a2", b"two", "stack-a")
    assert cache.get("a1") is None  # superseded: the next step needs only a2
    assert cache.get("a2") == b"two"
    assert cache.get("b1") == b"uno"
    cache.put("a2", b"two", "stack-a")  # the same text again changes nothing
    assert cache.get("a2") == b"two"


def test_the_least_recently_used_text_goes_first_when_full() -> None:
    cache = CheckpointCache(10)
    cache.put("a", b"aaaa", "s1")
    cache.put("b", b"bbbb", "s2")
    assert cache.get("a") == b"aaaa"  # now b is the least recently used
    cache.put("c", b"cccc", "s3")
    assert cache.get("b") is None
    assert cache.get("a") == b"aaaa" and cache.get("c") == b"cccc"
    cache.put("big", b"x" * 11, "s4")  # larger than the whole cache: not kept
    assert cache.get("big") is None and cache.get("a") == b"aaaa"


def test_how_a_text_was_checked_counts_in_the_budget_and_goes_with_it() -> None:
    from procella.state.pieces import Pieces

    known = Pieces(3, {i: (i + 1, 1) for i in range(10)}, list(range(10)))
    cache = CheckpointCache(max_bytes=1000 + known.cost)
    cache.put("a", b"x" * 1000, "s1", (1, 1), known)
    assert cache.pieces("a") is known
    cache.put("b", b"y" * 10, "s2")  # over budget: the oldest text goes, with its pieces
    assert cache.get("a") is None and cache.pieces("a") is None
    assert cache.get("b") == b"y" * 10
    cache.put("c", b"z" * 10, "s2", (1, 2), Pieces(3, {}, []))
    assert cache.get("b") is None  # s2's newest replaced its older text
    assert cache.pieces("c") is not None


def test_a_deleted_stack_gives_its_room_back_but_not_a_text_another_stack_holds() -> None:
    cache = CheckpointCache(10)
    cache.put("a", b"aaaa", "s1", (1, 1))
    cache.put("shared", b"ssss", "s2")
    cache.put("shared", b"ssss", "s3")
    cache.forget("s1")
    assert cache.get("a") is None and cache.newest("s1") is None
    cache.forget("s2")
    assert cache.get("shared") == b"ssss"
    cache.forget("s3")
    assert cache.get("shared") is None
    cache.forget("never-cached")
