"""What the Pulumi CLI sends: its headers and its request bodies, written once.

The API tests (``tests/helpers.py``), the load scenarios (``loadtest/pulumi_wire.py``) and
the harness's raw calls (``procella_server.call_api``) build their requests here, so what
the CLI sends is changed in one place. Bodies are JSON values with their keys in the CLI's
order (Go encodes struct fields in declaration order), sent as ``compact`` bytes; the
verbatim checkpoint is built as bytes, because its deployment text must reach the server
byte for byte. Shapes: shared/reference/pulumi-service-api.md, sections 5-7.

Standard library only, and nothing from ``procella``: locust imports this module in a venv
of its own, where nothing asyncio-based may be imported before its gevent patching.
"""

from __future__ import annotations

import json
from typing import Any

ACCEPT = "application/vnd.pulumi+9"  # the CLI's currentAPIVersion, 9


def compact(value: Any) -> bytes:
    """The CLI's serialization: compact JSON, keys in the order given."""
    return json.dumps(value, separators=(",", ":")).encode()


def token_headers(token: str) -> dict[str, str]:
    """The headers of a call made with an API token."""
    return {"Accept": ACCEPT, "Content-Type": "application/json", "Authorization": f"token {token}"}


def lease_headers(lease: str) -> dict[str, str]:
    """The headers of a call made with an update's lease (checkpoints, events, renew, ...)."""
    return {
        "Accept": ACCEPT,
        "Content-Type": "application/json",
        "Authorization": f"update-token {lease}",
    }


# Stacks -------------------------------------------------------------------------------------


def create_stack(name: str, *, tags: dict[str, str] | None = None, state: Any = None) -> Any:
    """``CreateStackRequest`` (``pulumi stack init``; ``state`` as ``stack import`` adds it)."""
    body: dict[str, Any] = {"stackName": name}
    if tags is not None:
        body["tags"] = tags
    if state is not None:
        body["state"] = state
    return body


# Updates ------------------------------------------------------------------------------------


def update_program(
    project: str,
    *,
    dry_run: bool,
    message: str = "",
    config: dict[str, Any] | None = None,
    environment: dict[str, str] | None = None,
) -> Any:
    """``UpdateProgramRequest``, as `pulumi up` / `preview` / `refresh` / `destroy` send it."""
    return {
        "name": project,
        "runtime": "python",
        "main": "",
        "description": "",
        "options": {
            "localPolicyPackPaths": None,
            "color": "raw",
            "dryRun": dry_run,
            "parallel": 16,
            "showConfig": False,
            "showReplacementSteps": False,
            "showNames": False,
            "summary": False,
            "debug": False,
        },
        "config": config or {},
        "metadata": {"message": message, "environment": environment or {}},
    }


def start_update(tags: dict[str, str] | None = None) -> Any:
    """``StartUpdateRequest`` without ``journalVersion``: what a CLI that does not journal
    sends (PULUMI_DISABLE_JOURNALING), so checkpoints follow."""
    return {"tags": tags}


def renew_lease(duration: Any = 300) -> Any:
    """``RenewUpdateLeaseRequest``: the CLI sends an empty token (the lease is the header)."""
    return {"token": "", "duration": duration}


def complete(status: str) -> Any:
    """``CompleteUpdateRequest``."""
    return {"status": status}


def checkpoint(untyped_deployment: dict[str, Any]) -> Any:
    """``PatchUpdateCheckpointRequest``: the whole deployment, ``{"version", "deployment"}``
    (and ``features`` where the state has them)."""
    body = {
        "isInvalid": False,
        "version": untyped_deployment["version"],
        "deployment": untyped_deployment["deployment"],
    }
    if "features" in untyped_deployment:
        body["features"] = untyped_deployment["features"]
    return body


def verbatim_checkpoint(text: bytes, sequence: int, version: int = 3) -> bytes:
    """``PatchUpdateVerbatimCheckpointRequest`` with the deployment text spliced in untouched."""
    return (
        b'{"version":%d,"untypedDeployment":' % version + text + b',"sequenceNumber":%d}' % sequence
    )


def text_edit(start: int, end: int, new_text: str) -> dict[str, Any]:
    """A gotextdiff TextEdit as the CLI sends it: byte offsets; line and column unused."""
    return {
        "Span": {
            "uri": "",
            "start": {"line": 1, "column": 1, "offset": start},
            "end": {"line": 1, "column": 1, "offset": end},
        },
        "NewText": new_text,
    }


def delta_checkpoint(
    edits: list[dict[str, Any]], checkpoint_hash: str, sequence: int, version: int = 3
) -> Any:
    """``PatchUpdateCheckpointDeltaRequest``: ``text_edit``s into the previous text of the
    same update, and the SHA-256 (hex) of the text they make."""
    return {
        "version": version,
        "checkpointHash": checkpoint_hash,
        "sequenceNumber": sequence,
        "deploymentDelta": edits,
    }


def journal_entries(entries: list[dict[str, Any]]) -> Any:
    """``JournalEntries``: one batch of ``journal_entry``s."""
    return {"entries": entries}


def journal_entry(kind: int, sequence: int, op: int = 0, **fields: Any) -> dict[str, Any]:
    """A JournalEntry as the CLI serializes it (``removeOld``/``removeNew`` always present)."""
    entry: dict[str, Any] = {
        "version": 1,
        "kind": kind,
        "sequenceID": sequence,
        "operationID": op,
        "removeOld": None,
        "removeNew": None,
    }
    entry.update(fields)
    return entry


def event_batch(events: list[dict[str, Any]]) -> Any:
    """``EngineEventBatch``: the CLI sends at most 50 engine events at a time."""
    return {"events": events}


def summary_event(
    sequence: int, timestamp: int, changes: dict[str, int], *, preview: bool = False
) -> dict[str, Any]:
    """The engine event that ends an update, with its resource changes."""
    return {
        "sequence": sequence,
        "timestamp": timestamp,
        "summaryEvent": {
            "maybeCorrupt": False,
            "durationSeconds": 1,
            "resourceChanges": changes,
            "PolicyPacks": {},
            "isPreview": preview,
        },
    }


# Secrets ------------------------------------------------------------------------------------


def encrypt(plaintext_b64: str) -> Any:
    return {"plaintext": plaintext_b64}


def decrypt(ciphertext: str) -> Any:
    return {"ciphertext": ciphertext}


def batch_encrypt(plaintexts_b64: list[str]) -> Any:
    return {"plaintexts": plaintexts_b64}


def batch_decrypt(ciphertexts: list[str]) -> Any:
    return {"ciphertexts": ciphertexts}
