"""Update kinds and statuses, and how they read on the wire."""

from __future__ import annotations

from procella.metadata.queries import updates as q

# Kinds an update can be created with (the path segment of POST STACK/{kind}).
UPDATE_KINDS = ("update", "preview", "refresh", "destroy")

# apitype.UpdateStatus, as `GET STACK/update/{id}` reports it.
WIRE_STATUS = {
    q.NOT_STARTED: "not started",
    q.RUNNING: "running",
    q.SUCCEEDED: "succeeded",
    q.FAILED: "failed",
    q.CANCELLED: "cancelled",
}

# apitype.UpdateResult, as `stack history` reports it. The enum has no "cancelled".
HISTORY_RESULT = {
    q.NOT_STARTED: "not-started",
    q.RUNNING: "in-progress",
    q.SUCCEEDED: "succeeded",
    q.FAILED: "failed",
    q.CANCELLED: "failed",
}

# What `POST .../complete` may set.
COMPLETE_STATUSES = {"succeeded": q.SUCCEEDED, "failed": q.FAILED, "cancelled": q.CANCELLED}
