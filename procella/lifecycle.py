"""The update lifecycle: an update's statuses and the steps between them, as pure rules.

```
not-started ──start──▶ running ──complete──▶ succeeded | failed | cancelled
     │                   │ │
     │                   │ └──cancel──▶ cancelled
     │                   └──abandon (its lease expired: the CLI died)──▶ cancelled
     └──cancel, expire (never started)──▶ cancelled
```

While running, ``renew`` extends the lease and ``checkpoint`` advances the sequence of
saved steps. A running non-preview update holds its stack; every step that ends it
releases the stack.

The functions here decide, over a small state read from the database; each returns the
next state, None when the call is a retry of a step already taken (it changes nothing),
or raises the error the API answers with. They do no I/O: the queries in
``procella.metadata.queries`` apply a step in one statement whose WHERE clause checks
the same condition again (compare-and-set), so a replica that lost a race changes
nothing. This module sits below every layer (like ``procella.errors``): the queries take
the statuses from here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from procella.errors import BadRequest, Conflict, LeaseInvalid

# Statuses as stored. Their wire names differ and live in procella.updates.models.
NOT_STARTED = "not-started"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"
TERMINAL = (SUCCEEDED, FAILED, CANCELLED)

# 403 is the only status that makes the CLI stop renewing a lease.
LEASE_ENDED = "the update's lease has expired or the update has ended"


@dataclass(frozen=True)
class Lifecycle:
    """What the lifecycle rules need to know of an update."""

    update_id: str
    status: str
    is_preview: bool
    lease_live: bool  # its lease ends later than the database clock at read time
    checkpoint_seq: int = 0  # the last saved step, 0 before the first
    checkpoint_sha: str | None = None  # that step's SHA-256

    @property
    def holds_stack(self) -> bool:
        """A running non-preview update holds its stack (one per stack)."""
        return self.status == RUNNING and not self.is_preview

    @property
    def frozen(self) -> bool:
        """Nothing can be added to its state any more: it ended, or its lease expired
        (an expired lease is never renewed)."""
        return self.status in TERMINAL or not self.lease_live


def start(state: Lifecycle) -> Lifecycle:
    """Start a created update, with a new lease. Taking the stack is the caller's check
    (``abandon`` the update holding it first, if that one's CLI died)."""
    if state.status != NOT_STARTED:
        raise Conflict(f"update '{state.update_id}' was already started")
    return replace(state, status=RUNNING, lease_live=True)


def check_live(state: Lifecycle) -> Lifecycle:
    """The update is running and its lease is live: it may renew, save and complete."""
    if state.status != RUNNING or not state.lease_live:
        raise LeaseInvalid(LEASE_ENDED)
    return state


def renew(state: Lifecycle) -> Lifecycle:
    """Extend a live lease. An expired one stays expired: its update may have been
    abandoned, and another may hold the stack."""
    return check_live(state)


def checkpoint(state: Lifecycle, sequence: int, digest: str) -> Lifecycle | None:
    """Save step ``sequence`` (numbered from 1 in each update) whose text hashes to
    ``digest``. None for a retry of the last saved step; any other number out of turn is
    a conflict. Whether the lease is live is checked where the step is stored."""
    if state.is_preview:
        raise BadRequest("a preview has no checkpoints")
    if sequence == state.checkpoint_seq and digest == state.checkpoint_sha:
        return None
    if sequence != state.checkpoint_seq + 1:
        raise Conflict(
            f"checkpoint sequence number {sequence} is out of order: "
            f"the next one is {state.checkpoint_seq + 1}"
        )
    return replace(state, checkpoint_seq=sequence, checkpoint_sha=digest)


def complete(state: Lifecycle, final: str) -> Lifecycle | None:
    """End the update as its CLI reports (``final`` is terminal). None for a retry: it
    ended so already. One that ended otherwise is a conflict."""
    assert final in TERMINAL
    if state.status == final:
        return None
    if state.status in TERMINAL:
        raise Conflict(f"update '{state.update_id}' has already ended: {state.status}")
    return _end(check_live(state), final)


def complete_locked(state: Lifecycle, final: str) -> Lifecycle | None:
    """``complete``, decided again under the row locks after the work done without them.
    An update that ended meanwhile in another way was cancelled or abandoned while its
    CLI was finishing: that ended its lease, which is what the CLI is told."""
    assert final in TERMINAL
    if state.status == final:
        return None
    return _end(check_live(state), final)


def cancel(state: Lifecycle) -> Lifecycle | None:
    """Cancel an update that has not ended; None for one that has (nothing changes)."""
    if state.status in TERMINAL:
        return None
    return _end(state, CANCELLED)


def abandon(state: Lifecycle) -> Lifecycle | None:
    """Cancel a running update whose lease expired: its CLI died, and the stack is free
    for the next one. None when it is not abandoned (its lease is live, or it ended)."""
    if state.status != RUNNING or state.lease_live:
        return None
    return _end(state, CANCELLED)


def expire(state: Lifecycle) -> Lifecycle | None:
    """Cancel an update that was created but never started (the garbage collector, past
    an age). None for any other."""
    if state.status != NOT_STARTED:
        return None
    return _end(state, CANCELLED)


def _end(state: Lifecycle, status: str) -> Lifecycle:
    return replace(state, status=status, lease_live=False)
