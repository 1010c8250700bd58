"""Property-based tests (Hypothesis): the parsers of every request body, the wire shapes,
delta arithmetic, names and tags, and a stateful test of the whole update lifecycle.

Each property says what must hold for every input of a kind, and Hypothesis searches for
one where it does not. The settings profile (``tests/conftest.py``) bounds the search;
the tests that drive the app through HTTP take a share of it (``scaled``).
"""

from __future__ import annotations

import hypothesis


def scaled(share: float, least: int = 5) -> int:
    """``share`` of the profile's example count (at least ``least``), for costly tests."""
    return max(least, int(hypothesis.settings().max_examples * share))
