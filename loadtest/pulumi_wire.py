"""What the simulated CLIs of a load run put on the wire, built with the standard library only.

The locustfile sends these bytes; nothing here imports locust, so the texts and deltas can
be checked on their own (``python loadtest/pulumi_wire.py`` runs a self-check). The request
bodies' shapes are ``procella_testing.wire``'s, shared with the API tests; this module adds
what a load run needs on top: its settings, realistic checkpoint texts in the CLI's fixed
key order, the byte-offset deltas between them (plus the SHA-256 of the new text) and engine
events in the CLI's batches (shared/reference/pulumi-service-api.md, sections 5-7).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from procella_testing import wire
from procella_testing.wire import ACCEPT as ACCEPT  # the locustfile's headers
from procella_testing.wire import compact

CLI_VERSION = "v3.259.0"
GZIP_LEVEL = 6  # Go's compress/gzip default, what the CLI uses
EVENTS_PER_BATCH = 50  # the CLI flushes engine events in batches of at most 50
DELTA_MODES = ("auto", "on", "off")


def gzipped(body: bytes) -> bytes:
    return gzip.compress(body, compresslevel=GZIP_LEVEL)


def rfc3339_now() -> str:
    """Go's RFC3339Nano in UTC, as the CLI stamps manifests (trailing zeros trimmed)."""
    ns = time.time_ns()
    seconds, frac = divmod(ns, 1_000_000_000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    digits = f"{frac:09d}".rstrip("0")
    return f"{stamp}.{digits}Z" if digits else f"{stamp}Z"


# Settings ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadConfig:
    """The knobs of a load run, read from LOAD_* environment variables."""

    token: str  # LOAD_TOKEN: an API token allowed to create stacks in `org`
    org: str  # LOAD_ORG
    project: str  # LOAD_PROJECT: every simulated user's stacks live in this project
    resources: int  # LOAD_RESOURCES: resources in a stack's state after each update
    checkpoints: int  # LOAD_CHECKPOINTS: checkpoints per update, one new resource each
    delta: str  # LOAD_DELTA: auto (as the CLI decides), on (always after the first), off
    secrets: int  # LOAD_SECRETS: values per batch-encrypt / batch-decrypt
    wait_max: float  # LOAD_WAIT: a user waits uniformly 0..LOAD_WAIT seconds between tasks

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> LoadConfig:
        token = env.get("LOAD_TOKEN", "").strip()
        if not token:
            raise SystemExit("LOAD_TOKEN is not set: give the token the simulated CLIs use")
        delta = env.get("LOAD_DELTA", "auto")
        if delta not in DELTA_MODES:
            raise SystemExit(f"LOAD_DELTA must be one of {', '.join(DELTA_MODES)}")
        config = cls(
            token=token,
            org=env.get("LOAD_ORG", "organization"),
            project=env.get("LOAD_PROJECT", "loadtest"),
            resources=int(env.get("LOAD_RESOURCES", "50")),
            checkpoints=int(env.get("LOAD_CHECKPOINTS", "10")),
            delta=delta,
            secrets=int(env.get("LOAD_SECRETS", "20")),
            wait_max=float(env.get("LOAD_WAIT", "1.0")),
        )
        if config.resources < 0 or config.checkpoints < 1 or not 1 <= config.secrets <= 1000:
            raise SystemExit("need LOAD_RESOURCES >= 0, LOAD_CHECKPOINTS >= 1, LOAD_SECRETS 1-1000")
        return config


@dataclass(frozen=True)
class DeltaPolicy:
    """When the CLI sends ``checkpointdelta``: the server advertises the capability, and
    neither the previous nor the new text is shorter than the cutoff (section 6.6)."""

    advertised: bool
    cutoff: int

    @classmethod
    def from_capabilities(cls, body: Any) -> DeltaPolicy:
        for cap in (body or {}).get("capabilities") or []:
            if cap.get("capability") in ("delta-checkpoint-uploads", "delta-checkpoint-uploads-v2"):
                config = cap.get("configuration") or {}
                return cls(True, int(config.get("checkpointCutoffSizeBytes", 0)))
        return cls(False, 0)

    def use_delta(self, mode: str, prev: bytes, new: bytes) -> bool:
        if mode == "off" or not self.advertised:
            return False
        if mode == "on":
            return True
        return len(prev) >= self.cutoff and len(new) >= self.cutoff


# Request bodies: the shapes are procella_testing.wire's, with what a load run puts in them --


def create_stack_body(stack: str, project: str) -> bytes:
    tags = {"pulumi:project": project, "pulumi:runtime": "python"}
    return compact(wire.create_stack(stack, tags=tags))


def update_program_body(project: str, *, dry_run: bool, message: str) -> bytes:
    """``UpdateProgramRequest`` as `pulumi up` / `pulumi preview` send it."""
    config = {f"{project}:size": {"string": "large", "secret": False, "object": False}}
    environment = {"exec.kind": "cli", "pulumi.version": CLI_VERSION}
    return compact(
        wire.update_program(
            project, dry_run=dry_run, message=message, config=config, environment=environment
        )
    )


def start_update_body(project: str) -> bytes:
    # No journalVersion: these scenarios send checkpoints, as a CLI with
    # PULUMI_DISABLE_JOURNALING does (a journaling update refuses checkpoints).
    return compact(wire.start_update({"pulumi:project": project}))


RENEW_LEASE_BODY = compact(wire.renew_lease(300))


def complete_body(status: str) -> bytes:
    return compact(wire.complete(status))


def verbatim_body(text: bytes, sequence: int) -> bytes:
    """``PatchUpdateVerbatimCheckpointRequest`` with the text spliced in untouched."""
    return wire.verbatim_checkpoint(text, sequence)


@dataclass(frozen=True)
class TextEdit:
    start: int  # byte offsets into the previous text
    end: int
    new_text: bytes


def delta_body(edits: list[TextEdit], new_text: bytes, sequence: int) -> bytes:
    """``PatchUpdateCheckpointDeltaRequest``: gotextdiff TextEdits and the new text's hash."""
    spans = [wire.text_edit(e.start, e.end, e.new_text.decode()) for e in edits]
    checkpoint_hash = hashlib.sha256(new_text).hexdigest()
    return compact(wire.delta_checkpoint(spans, checkpoint_hash, sequence))


def apply_edits(prev: bytes, edits: list[TextEdit]) -> bytes:
    """The server's side of a delta (section 6.6), for the self-check."""
    out, last = b"", 0
    for edit in sorted(edits, key=lambda e: e.start):
        out += prev[last : edit.start] + edit.new_text
        last = edit.end
    return out + prev[last:]


def secret_plaintexts(count: int, salt: str) -> list[str]:
    return [base64.b64encode(f"{salt}-secret-{i}".encode()).decode() for i in range(count)]


def batch_encrypt_body(plaintexts: list[str]) -> bytes:
    return compact(wire.batch_encrypt(plaintexts))


def batch_decrypt_body(ciphertexts: list[str]) -> bytes:
    return compact(wire.batch_decrypt(ciphertexts))


# Deployments ------------------------------------------------------------------------------


class Deployment:
    """The checkpoint texts of one stack's updates.

    The state holds ``base`` stable resources; each update then adds ``steps`` resources,
    one per checkpoint, so checkpoint j carries base + j resources and the last one the
    full state. Each update gives its new resources fresh ids, as a replacement would, so
    successive updates store different bytes.
    """

    def __init__(self, *, url: str, org: str, project: str, stack: str, base: int) -> None:
        self.project = project
        self.stack = stack
        self.stack_urn = f"urn:pulumi:{stack}::{project}::pulumi:pulumi:Stack::{project}-{stack}"
        provider_urn = f"urn:pulumi:{stack}::{project}::pulumi:providers:pulumi-python::default"
        self.provider_ref = f"{provider_urn}::{hashlib.md5(stack.encode()).hexdigest()}"
        self.generation = 0
        root = {
            "urn": self.stack_urn,
            "custom": False,
            "type": "pulumi:pulumi:Stack",
            "outputs": {"endpoint": f"https://{stack}.example.com"},
            "created": rfc3339_now(),
            "modified": rfc3339_now(),
        }
        provider = {
            "urn": provider_urn,
            "custom": True,
            "id": self.provider_ref.rsplit("::", 1)[1],
            "type": "pulumi:providers:pulumi-python",
            "created": rfc3339_now(),
            "modified": rfc3339_now(),
        }
        stable = [self.resource(i, generation=0) for i in range(base)]
        self._stable = b",".join([compact(root), compact(provider), *stable])
        providers = {
            "type": "service",
            "state": {"url": url, "owner": org, "project": project, "stack": stack},
        }
        # Everything after the manifest time and before the resources, fixed per stack.
        self._middle = (
            b'","magic":"'
            + hashlib.sha256(CLI_VERSION.encode()).hexdigest().encode()
            + b'","version":"'
            + CLI_VERSION.encode()
            + b'"},"secrets_providers":'
            + compact(providers)
            + b',"metadata":{},"resources":['
        )
        self.base_count = base

    def urn(self, index: int) -> str:
        return f"urn:pulumi:{self.stack}::{self.project}::pulumi-python:dynamic:Resource::r{index}"

    def resource(self, index: int, *, generation: int) -> bytes:
        """One dynamic-provider resource, about 1.5 KB (a real one is often larger)."""
        name = f"r{index}"
        rid = hashlib.sha1(f"{self.stack}/{name}/{generation}".encode()).hexdigest()
        inputs = {
            # Dynamic providers serialize their code here: the bulk of a real resource.
            "__provider": base64.b64encode(hashlib.sha512(rid.encode()).digest() * 4).decode(),
            "index": index,
            "tags": {"team": "platform", "stack": self.stack, "generation": str(generation)},
        }
        outputs = {**inputs, "arn": f"arn:aws:example:us-east-1:123456789012:thing/{rid}"}
        stamp = rfc3339_now()
        return compact(
            {
                "urn": self.urn(index),
                "custom": True,
                "id": rid,
                "type": "pulumi-python:dynamic:Resource",
                "inputs": inputs,
                "outputs": outputs,
                "parent": self.stack_urn,
                "provider": self.provider_ref,
                "propertyDependencies": {"index": [], "tags": []},
                "created": stamp,
                "modified": stamp,
            }
        )

    def begin_update(self) -> UpdateTexts:
        self.generation += 1
        return UpdateTexts(self, self.generation)

    def render(self, stamp: str, added: list[bytes]) -> bytes:
        head = b'{"version":3,"deployment":{"manifest":{"time":"' + stamp.encode()
        body = b",".join([self._stable, *added])
        return head + self._middle + body + b"]}}"


class UpdateTexts:
    """The successive checkpoint texts of one update, and the delta between two of them."""

    TIME_OFFSET = len(b'{"version":3,"deployment":{"manifest":{"time":"')

    def __init__(self, deployment: Deployment, generation: int) -> None:
        self.deployment = deployment
        self.generation = generation
        self.added: list[bytes] = []
        self.stamp = ""
        self.text = b""

    def step(self) -> tuple[bytes, list[TextEdit]]:
        """Add one resource: the new text, and the edits that turn the previous text into
        it (a new manifest time near the start, the resource appended at the end)."""
        d = self.deployment
        prev, prev_stamp = self.text, self.stamp
        new_resource = d.resource(d.base_count + len(self.added), generation=self.generation)
        self.added.append(new_resource)
        self.stamp = rfc3339_now()
        self.text = d.render(self.stamp, self.added)
        if not prev:
            return self.text, []
        at = self.TIME_OFFSET
        tail = len(prev) - len(b"]}}")
        edits = [
            TextEdit(at, at + len(prev_stamp), self.stamp.encode()),
            TextEdit(tail, tail, b"," + new_resource),
        ]
        return self.text, edits


# Engine events ----------------------------------------------------------------------------


class Events:
    """Engine events of one update, numbered from 0, handed out in CLI-sized batches."""

    def __init__(self, *, preview: bool) -> None:
        self.preview = preview
        self.sequence = 0
        self.pending: list[dict[str, Any]] = []

    def _add(self, kind: str, payload: dict[str, Any]) -> None:
        self.pending.append(
            {"sequence": self.sequence, "timestamp": int(time.time()), kind: payload}
        )
        self.sequence += 1

    def prelude(self, project: str) -> None:
        self._add("preludeEvent", {"config": {f"{project}:size": "large"}})

    def resource(self, urn: str, *, op: str = "create") -> None:
        metadata = {
            "op": op,
            "urn": urn,
            "type": "pulumi-python:dynamic:Resource",
            "old": None,
            "new": {"urn": urn, "type": "pulumi-python:dynamic:Resource", "custom": True},
            "provider": "",
        }
        self._add("resourcePreEvent", {"metadata": metadata, "planning": self.preview})
        if not self.preview:
            self._add("resOutputsEvent", {"metadata": metadata, "planning": False})
        self._add(
            "diagnosticEvent",
            {"urn": urn, "message": f"{op} {urn}\n", "color": "raw", "severity": "info"},
        )

    def summary(self, changes: dict[str, int]) -> None:
        timestamp = int(time.time())
        self.pending.append(
            wire.summary_event(self.sequence, timestamp, changes, preview=self.preview)
        )
        self.sequence += 1

    def take(self, *, flush: bool) -> bytes | None:
        """A batch body when 50 events are waiting (or any, on ``flush``)."""
        if not self.pending or (len(self.pending) < EVENTS_PER_BATCH and not flush):
            return None
        batch, self.pending = self.pending[:EVENTS_PER_BATCH], self.pending[EVENTS_PER_BATCH:]
        return compact(wire.event_batch(batch))


# Self-check -------------------------------------------------------------------------------


def _self_check() -> None:
    deployment = Deployment(
        url="http://127.0.0.1:9090", org="acme", project="web", stack="dev", base=5
    )
    for _ in range(2):
        update = deployment.begin_update()
        prev = b""
        for _ in range(4):
            text, edits = update.step()
            parsed = json.loads(text)
            assert parsed["deployment"]["manifest"]["time"] == update.stamp
            if prev:
                assert apply_edits(prev, edits) == text, "delta does not rebuild the text"
                json.loads(delta_body(edits, text, 2))
            json.loads(verbatim_body(text, 1))
            prev = text
        assert len(parsed["deployment"]["resources"]) == 2 + 5 + 4
    print(f"ok: {len(text)} bytes for {len(parsed['deployment']['resources'])} resources")


if __name__ == "__main__":
    _self_check()
