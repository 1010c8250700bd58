"""Update kinds and statuses, and how they read on the wire."""

from __future__ import annotations

from procella import lifecycle as lc

# Kinds an update can be created with (the path segment of POST STACK/{kind}).
UPDATE_KINDS = ("update", "preview", "refresh", "destroy")

# apitype.UpdateStatus, as `GET STACK/update/{id}` reports it.
WIRE_STATUS = {
    lc.NOT_STARTED: "not started",
    lc.RUNNING: "running",
    lc.SUCCEEDED: "succeeded",
    lc.FAILED: "failed",
    lc.CANCELLED: "cancelled",
}

# apitype.UpdateResult, as `stack history` reports it. The enum has no "cancelled".
HISTORY_RESULT = {
    lc.NOT_STARTED: "not-started",
    lc.RUNNING: "in-progress",
    lc.SUCCEEDED: "succeeded",
    lc.FAILED: "failed",
    lc.CANCELLED: "failed",
}

# What `POST .../complete` may set.
COMPLETE_STATUSES = {"succeeded": lc.SUCCEEDED, "failed": lc.FAILED, "cancelled": lc.CANCELLED}
