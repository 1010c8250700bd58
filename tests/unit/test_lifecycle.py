"""The update lifecycle's rules (procella.lifecycle), without a database."""

from __future__ import annotations

import pytest

from procella import lifecycle
from procella.errors import BadRequest, Conflict, LeaseInvalid
from procella.lifecycle import (
    CANCELLED,
    FAILED,
    NOT_STARTED,
    RUNNING,
    SUCCEEDED,
    TERMINAL,
    Lifecycle,
)


def state(
    status: str = RUNNING, *, live: bool = True, preview: bool = False, seq: int = 0
) -> Lifecycle:
    return Lifecycle("u1", status, preview, live, seq, None if seq == 0 else f"sha{seq}")


def test_start_runs_a_created_update_with_a_live_lease() -> None:
    started = lifecycle.start(state(NOT_STARTED, live=False))
    assert (started.status, started.lease_live) == (RUNNING, True)
    assert started.holds_stack
    assert not lifecycle.start(state(NOT_STARTED, live=False, preview=True)).holds_stack


@pytest.mark.parametrize("status", [RUNNING, *TERMINAL])
def test_start_twice_is_a_conflict(status: str) -> None:
    with pytest.raises(Conflict, match="already started"):
        lifecycle.start(state(status))


def test_renew_needs_a_running_update_with_a_live_lease() -> None:
    assert lifecycle.renew(state()) == state()
    for dead in (state(live=False), state(CANCELLED, live=False), state(NOT_STARTED, live=False)):
        with pytest.raises(LeaseInvalid):
            lifecycle.renew(dead)


def test_checkpoint_advances_one_step_at_a_time() -> None:
    saved = lifecycle.checkpoint(state(seq=2), 3, "sha3")
    assert saved is not None and (saved.checkpoint_seq, saved.checkpoint_sha) == (3, "sha3")


def test_checkpoint_retry_of_the_last_step_changes_nothing() -> None:
    assert lifecycle.checkpoint(state(seq=2), 2, "sha2") is None


@pytest.mark.parametrize(("sequence", "digest"), [(2, "other"), (1, "sha1"), (4, "sha4")])
def test_checkpoint_out_of_turn_is_a_conflict(sequence: int, digest: str) -> None:
    with pytest.raises(Conflict, match="the next one is 3"):
        lifecycle.checkpoint(state(seq=2), sequence, digest)


def test_a_preview_has_no_checkpoints() -> None:
    with pytest.raises(BadRequest):
        lifecycle.checkpoint(state(preview=True), 1, "sha1")


@pytest.mark.parametrize("final", TERMINAL)
def test_complete_ends_a_live_update(final: str) -> None:
    ended = lifecycle.complete(state(), final)
    assert ended is not None
    assert (ended.status, ended.lease_live, ended.holds_stack) == (final, False, False)
    assert ended.frozen


def test_complete_retry_changes_nothing_and_another_ending_is_a_conflict() -> None:
    assert lifecycle.complete(state(SUCCEEDED, live=False), SUCCEEDED) is None
    with pytest.raises(Conflict, match="already ended: cancelled"):
        lifecycle.complete(state(CANCELLED, live=False), SUCCEEDED)


def test_complete_after_the_lease_expired_is_refused() -> None:
    with pytest.raises(LeaseInvalid):
        lifecycle.complete(state(live=False), SUCCEEDED)
    with pytest.raises(LeaseInvalid):
        lifecycle.complete(state(NOT_STARTED, live=False), SUCCEEDED)


def test_complete_under_the_locks_tells_a_raced_ending_as_an_ended_lease() -> None:
    assert lifecycle.complete_locked(state(FAILED, live=False), FAILED) is None
    with pytest.raises(LeaseInvalid):
        lifecycle.complete_locked(state(CANCELLED, live=False), FAILED)
    ended = lifecycle.complete_locked(state(), FAILED)
    assert ended is not None and ended.status == FAILED


@pytest.mark.parametrize("before", [state(), state(live=False), state(NOT_STARTED, live=False)])
def test_cancel_ends_any_update_that_has_not_ended(before: Lifecycle) -> None:
    cancelled = lifecycle.cancel(before)
    assert cancelled is not None
    assert (cancelled.status, cancelled.lease_live) == (CANCELLED, False)


@pytest.mark.parametrize("status", TERMINAL)
def test_cancel_of_an_ended_update_changes_nothing(status: str) -> None:
    assert lifecycle.cancel(state(status, live=False)) is None


def test_abandon_takes_only_a_running_update_whose_lease_expired() -> None:
    abandoned = lifecycle.abandon(state(live=False))
    assert abandoned is not None and abandoned.status == CANCELLED
    assert lifecycle.abandon(state()) is None  # its CLI is alive
    assert lifecycle.abandon(state(NOT_STARTED, live=False)) is None
    assert lifecycle.abandon(state(SUCCEEDED, live=False)) is None


def test_expire_takes_only_an_update_never_started() -> None:
    expired = lifecycle.expire(state(NOT_STARTED, live=False))
    assert expired is not None and expired.status == CANCELLED
    for other in (state(), state(live=False), state(FAILED, live=False)):
        assert lifecycle.expire(other) is None


def test_frozen_once_ended_or_the_lease_expired() -> None:
    assert not state().frozen
    assert state(live=False).frozen
    assert state(NOT_STARTED, live=False).frozen
    assert state(SUCCEEDED, live=False).frozen
