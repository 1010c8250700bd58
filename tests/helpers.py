"""Helpers shared by the API tests: a thin protocol client and the error-shape check.

``Api`` speaks the Pulumi protocol the way the CLI does (headers, gzip on the routes the
CLI gzips, update tokens on the lease calls) against the Quart test client, and returns
the raw responses so each test asserts on exactly what the server sent. The bodies are
``procella_testing.wire``'s, which the load scenarios send too.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import generate_latest
from quart import Quart
from quart.testing.app import TestApp
from quart.typing import TestAppProtocol, TestClientProtocol

from procella import create_app, metrics
from procella.auth.models import Role
from procella.metadata.sqlite import SqliteStore
from procella.services import Services
from procella.settings import Settings
from procella_testing import wire

# The API tests build bodies with these too.
from procella_testing.wire import compact as compact
from procella_testing.wire import journal_entry as journal_entry
from procella_testing.wire import text_edit as text_edit
from tests.conftest import ADMIN_TOKEN

DEFAULT_ORG = "organization"
# The peer address of every ``Api`` call, as a server would see it (the test client sends none).
CALLER = {"client": ("127.0.0.1", 50000)}  # Settings.default_org, the admin's organization
_UNSET: Any = object()


def quart_app(app: TestAppProtocol) -> Quart:
    """The app under ``test_app()``: the protocol Quart types it with does not name it."""
    assert isinstance(app, TestApp), app
    return app.app


def services_of(app: TestAppProtocol) -> Services:
    """What the app under test works with: its stores and services."""
    found: Services = quart_app(app).extensions["procella"]
    return found


def gz(data: bytes | str | Any) -> bytes:
    """gzip ``data``: bytes and str as they are, anything else as compact JSON."""
    if isinstance(data, str):
        data = data.encode()
    elif not isinstance(data, bytes):
        data = json.dumps(data, separators=(",", ":")).encode()
    return gzip.compress(data, compresslevel=1)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def _not_json(name: str) -> Any:
    raise AssertionError(f"the server sent {name}, which is not JSON (Go cannot decode it)")


def strict_json(raw: bytes | str) -> Any:
    """``json.loads`` that fails on NaN and ±Infinity, as Go's decoder does."""
    return json.loads(raw, parse_constant=_not_json)


async def body_json(response: Any) -> Any:
    return strict_json(await response.get_data())


async def assert_error(response: Any, status: int) -> str:
    """The canonical error: HTTP ``status`` and a JSON body ``{"code": status, "message": str}``.

    Returns the message, for tests that check its text.
    """
    raw = await response.get_data()
    assert response.status_code == status, (response.status_code, raw[:500])
    assert response.headers.get("Content-Type", "").startswith("application/json"), response.headers
    body = strict_json(raw)
    assert isinstance(body, dict), body
    code = body.get("code")
    assert isinstance(code, int) and not isinstance(code, bool), body
    assert code == status, body
    message = body.get("message")
    assert isinstance(message, str) and message.strip(), body
    return message


async def assert_ok(response: Any, status: int) -> bytes:
    """The route's one success status; returns the body."""
    raw: bytes = await response.get_data()
    assert response.status_code == status, (response.status_code, raw[:500])
    return raw


async def make_token(
    app: TestAppProtocol, org: str, role: Role, login: str, name: str | None = None
) -> str:
    """A fresh API token for ``login`` with ``role`` in ``org`` (both created if missing)."""
    auth = services_of(app).auth
    issued = await auth.create_token(org, role, login, name or f"t-{time.monotonic_ns()}")
    token: str = issued.token
    return token


async def expire_lease(app: TestAppProtocol, update_id: str) -> None:
    """Put the update's lease in the past, as if its CLI had died long ago."""
    async with services_of(app).meta.transaction() as conn:
        await conn.execute("UPDATE updates SET lease_expires_at = 0 WHERE id = ?", (update_id,))


async def until_blocked(app: TestAppProtocol, count: int = 1, timeout: float = 10.0) -> None:
    """Wait until ``count`` sessions wait for a lock held by someone else (the test, mostly):
    on PostgreSQL, lock requests ``pg_locks`` shows not granted in this database; on SQLite,
    tasks queued for the store's one writer. Fails after ``timeout`` seconds, so a race test
    cannot pass without the race it sets up."""
    meta = services_of(app).meta
    deadline = time.monotonic() + timeout
    while True:
        if isinstance(meta, SqliteStore):
            # SqliteStore serializes writers on an asyncio.Lock; its queue is the waiters.
            waiting = len(meta._write_lock._waiters or ())
        else:  # PostgreSQL
            async with meta.read() as conn:
                row = await conn.fetchone(
                    "SELECT count(DISTINCT l.pid) FROM pg_locks l "
                    "JOIN pg_stat_activity a ON a.pid = l.pid "
                    "WHERE NOT l.granted AND a.datname = current_database()"
                )
            assert row is not None
            waiting = int(row[0])
        if waiting >= count:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{waiting} of {count} sessions wait for a lock after {timeout}s")
        await asyncio.sleep(0.01)


def deployment(
    resources: int = 0, *, secrets_stack: tuple[str, str, str] | None = None
) -> dict[str, Any]:
    """A plausible DeploymentV3 (the inner object) with ``resources`` resources."""
    dep: dict[str, Any] = {
        "manifest": {"time": "2024-01-01T00:00:00Z", "magic": "", "version": "v3.259.0"},
    }
    if secrets_stack is not None:
        org, project, stack = secrets_stack
        dep["secrets_providers"] = {
            "type": "service",
            "state": {"url": "http://localhost", "owner": org, "project": project, "stack": stack},
        }
    if resources:
        stack_urn = "urn:pulumi:dev::proj::pulumi:pulumi:Stack::proj-dev"
        items: list[dict[str, Any]] = [
            {"urn": stack_urn, "custom": False, "type": "pulumi:pulumi:Stack", "outputs": {}}
        ]
        for i in range(1, resources):
            items.append(
                {
                    "urn": f"urn:pulumi:dev::proj::pulumi-python:dynamic:Resource::r{i}",
                    "custom": True,
                    "id": f"id-{i}",
                    "type": "pulumi-python:dynamic:Resource",
                    "parent": stack_urn,
                    "outputs": {"value": i},
                }
            )
        dep["resources"] = items
    return dep


def untyped(resources: int = 0, version: int = 3, **kw: Any) -> dict[str, Any]:
    return {"version": version, "deployment": deployment(resources, **kw)}


def delta_between(prev: bytes, new: bytes) -> list[dict[str, Any]]:
    """One TextEdit that turns ``prev`` into ``new`` (common prefix and suffix kept)."""
    p = 0
    while p < min(len(prev), len(new)) and prev[p] == new[p]:
        p += 1
    s = 0
    while s < min(len(prev), len(new)) - p and prev[-1 - s] == new[-1 - s]:
        s += 1
    middle = new[p : len(new) - s]
    # Offsets must fall on character boundaries for NewText to be a string.
    while True:
        try:
            text = middle.decode()
            break
        except UnicodeDecodeError:
            p -= 1
            middle = new[p : len(new) - s]
    return [text_edit(p, len(prev) - s, text)]


@dataclass
class Update:
    """A created (and maybe started) update."""

    stack: str  # "org/project/stack"
    id: str
    kind: str = "update"
    token: str = ""
    version: int = 0
    start: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return f"/api/stacks/{self.stack}/{self.kind}/{self.id}"


class Api:
    """The protocol, one method per call, with the caller's API token."""

    def __init__(self, client: TestClientProtocol, token: str = ADMIN_TOKEN) -> None:
        self.client = client
        self.token = token

    def as_token(self, token: str) -> Api:
        return Api(self.client, token)

    def headers(self, *, token: str | None = None, lease: str | None = None) -> dict[str, str]:
        if lease is not None:
            return wire.lease_headers(lease)
        return wire.token_headers(self.token if token is None else token)

    async def call(
        self,
        method: str,
        path: str,
        body: Any = _UNSET,
        *,
        raw: bytes | None = None,
        gzip_body: bool = False,
        lease: str | None = None,
        headers: dict[str, str] | None = None,
        query: dict[str, Any] | None = None,
    ) -> Any:
        """One request. ``body`` is sent as compact JSON, ``raw`` as given; either may be
        gzipped (with ``Content-Encoding: gzip``) as the CLI does on its gzip routes."""
        all_headers = self.headers(lease=lease)
        if headers is not None:
            all_headers.update(headers)
        data: bytes | None = None
        if raw is not None:
            data = raw
        elif body is not _UNSET:
            data = compact(body)
        if data is not None and gzip_body:
            data = gz(data)
            all_headers["Content-Encoding"] = "gzip"
        # Quart's protocol declares open()'s keywords without their defaults (json, ...).
        return await self.client.open(  # type: ignore[call-arg]
            path,
            method=method,
            headers=all_headers,
            data=data,
            query_string=query,
            scope_base=CALLER,
        )

    # Stacks ----------------------------------------------------------------------------

    async def create_stack(
        self, stack: str, *, tags: dict[str, str] | None = None, state: Any = None
    ) -> Any:
        org, project, name = stack.split("/")
        body = wire.create_stack(name, tags=tags, state=state)
        return await self.call("POST", f"/api/stacks/{org}/{project}", body)

    async def new_stack(self, stack: str, **kw: Any) -> str:
        await assert_ok(await self.create_stack(stack, **kw), 200)
        return stack

    async def get_stack(self, stack: str) -> Any:
        return await self.call("GET", f"/api/stacks/{stack}")

    async def stack_json(self, stack: str) -> dict[str, Any]:
        response = await self.get_stack(stack)
        assert response.status_code == 200, await response.get_data()
        result: dict[str, Any] = await body_json(response)
        return result

    async def export(self, stack: str, version: int | None = None) -> Any:
        suffix = "" if version is None else f"/{version}"
        return await self.call("GET", f"/api/stacks/{stack}/export{suffix}")

    async def export_bytes(self, stack: str, version: int | None = None) -> bytes:
        return await assert_ok(await self.export(stack, version), 200)

    async def history(self, stack: str, **query: Any) -> list[dict[str, Any]]:
        response = await self.call("GET", f"/api/stacks/{stack}/updates", query=query or None)
        assert response.status_code == 200, await response.get_data()
        updates: list[dict[str, Any]] = (await body_json(response))["updates"]
        return updates

    async def import_state(self, stack: str, state: Any, *, raw: bytes | None = None) -> Any:
        if raw is None:
            raw = compact(state)
        return await self.call("POST", f"/api/stacks/{stack}/import", raw=raw, gzip_body=True)

    async def list_stacks(self, **query: Any) -> dict[str, Any]:
        response = await self.call("GET", "/api/user/stacks", query=query or None)
        assert response.status_code == 200, await response.get_data()
        result: dict[str, Any] = await body_json(response)
        return result

    async def list_all_stacks(self, **query: Any) -> list[dict[str, Any]]:
        """Every page of ``/api/user/stacks``, the way the CLI loops."""
        stacks: list[dict[str, Any]] = []
        token = None
        for _ in range(1000):
            page = await self.list_stacks(
                **query, **({"continuationToken": token} if token else {})
            )
            stacks.extend(page["stacks"])
            token = page.get("continuationToken")
            if not token:
                return stacks
        raise AssertionError("paging did not end")

    # Updates ---------------------------------------------------------------------------

    async def create_update(
        self,
        stack: str,
        kind: str = "update",
        *,
        dry_run: bool = False,
        message: str = "",
        config: dict[str, Any] | None = None,
        environment: dict[str, str] | None = None,
    ) -> Any:
        body = wire.update_program(
            stack.split("/")[1],
            dry_run=dry_run,
            message=message,
            config=config,
            environment=environment,
        )
        return await self.call("POST", f"/api/stacks/{stack}/{kind}", body)

    async def new_update(self, stack: str, kind: str = "update", **kw: Any) -> Update:
        response = await self.create_update(stack, kind, **kw)
        body = json.loads(await assert_ok(response, 200))
        assert isinstance(body["updateID"], str) and body["updateID"], body
        # Later calls use the literal segment "update", as the CLI does.
        return Update(stack, body["updateID"], "update")

    async def start_update(self, update: Update, body: Any = _UNSET) -> Any:
        # Without journalVersion, as a CLI with journaling off sends it: checkpoints follow.
        if body is _UNSET:
            body = wire.start_update()
        return await self.call("POST", update.path, body)

    async def begin(self, update: Update, body: Any = _UNSET) -> Update:
        """Start ``update`` and remember its lease."""
        response = await self.start_update(update, body)
        update.start = json.loads(await assert_ok(response, 200))
        update.token = update.start["token"]
        update.version = update.start["version"]
        return update

    async def started(self, stack: str, kind: str = "update", **kw: Any) -> Update:
        return await self.begin(await self.new_update(stack, kind, **kw))

    async def renew(self, update: Update, duration: Any = 300, lease: str | None = None) -> Any:
        return await self.call(
            "POST",
            f"{update.path}/renew_lease",
            wire.renew_lease(duration),
            lease=update.token if lease is None else lease,
        )

    async def checkpoint(
        self, update: Update, untyped_deployment: dict[str, Any], **kw: Any
    ) -> Any:
        body = wire.checkpoint(untyped_deployment)
        return await self.call(
            "PATCH", f"{update.path}/checkpoint", body, gzip_body=True, lease=update.token, **kw
        )

    async def verbatim(
        self, update: Update, text: bytes, sequence: int, version: int = 3, lease: str | None = None
    ) -> Any:
        """``checkpointverbatim`` with the deployment text spliced in byte for byte."""
        raw = wire.verbatim_checkpoint(text, sequence, version)
        return await self.call(
            "PATCH",
            f"{update.path}/checkpointverbatim",
            raw=raw,
            gzip_body=True,
            lease=update.token if lease is None else lease,
        )

    async def delta(
        self,
        update: Update,
        edits: list[dict[str, Any]],
        new_text_hash: str,
        sequence: int,
        version: int = 3,
        lease: str | None = None,
    ) -> Any:
        body = wire.delta_checkpoint(edits, new_text_hash, sequence, version)
        return await self.call(
            "PATCH",
            f"{update.path}/checkpointdelta",
            body,
            gzip_body=True,
            lease=update.token if lease is None else lease,
        )

    async def journal(self, update: Update, entries: list[dict[str, Any]], **kw: Any) -> Any:
        kw.setdefault("lease", update.token)
        return await self.call(
            "PATCH",
            f"{update.path}/journalentries",
            wire.journal_entries(entries),
            gzip_body=True,
            **kw,
        )

    async def events(self, update: Update, events: list[dict[str, Any]], **kw: Any) -> Any:
        kw.setdefault("lease", update.token)
        return await self.call(
            "POST", f"{update.path}/events/batch", wire.event_batch(events), gzip_body=True, **kw
        )

    async def complete(self, update: Update, status: str = "succeeded", **kw: Any) -> Any:
        kw.setdefault("lease", update.token)
        return await self.call("POST", f"{update.path}/complete", wire.complete(status), **kw)

    async def cancel(self, update: Update) -> Any:
        return await self.call("POST", f"{update.path}/cancel")

    async def status(self, update: Update, **query: Any) -> Any:
        return await self.call("GET", update.path, query=query or None)

    async def run_update(
        self,
        stack: str,
        state: dict[str, Any] | None = None,
        *,
        kind: str = "update",
        message: str = "",
        changes: dict[str, int] | None = None,
    ) -> Update:
        """A whole successful update: create, start, events, a full checkpoint, complete."""
        update = await self.started(stack, kind, message=message)
        events = [stdout_event(0, "hello")]
        if changes is not None:
            events.append(summary_event(1, changes))
        await assert_ok(await self.events(update, events), 204)
        if state is not None:
            await assert_ok(await self.checkpoint(update, state), 204)
        await assert_ok(await self.complete(update), 204)
        return update

    # Secrets ---------------------------------------------------------------------------

    async def encrypt(self, stack: str, plaintext: bytes) -> Any:
        return await self.call("POST", f"/api/stacks/{stack}/encrypt", wire.encrypt(b64(plaintext)))

    async def encrypt_one(self, stack: str, plaintext: bytes) -> str:
        body = json.loads(await assert_ok(await self.encrypt(stack, plaintext), 200))
        ciphertext: str = body["ciphertext"]
        return ciphertext

    async def decrypt(self, stack: str, ciphertext: str) -> Any:
        return await self.call("POST", f"/api/stacks/{stack}/decrypt", wire.decrypt(ciphertext))

    async def batch_encrypt(self, stack: str, plaintexts: list[bytes]) -> Any:
        body = wire.batch_encrypt([b64(p) for p in plaintexts])
        return await self.call("POST", f"/api/stacks/{stack}/batch-encrypt", body, gzip_body=True)

    async def batch_decrypt(self, stack: str, ciphertexts: list[str]) -> Any:
        body = wire.batch_decrypt(ciphertexts)
        return await self.call("POST", f"/api/stacks/{stack}/batch-decrypt", body, gzip_body=True)


def stdout_event(sequence: int, message: str = "line") -> dict[str, Any]:
    return {
        "sequence": sequence,
        "timestamp": 1_700_000_000 + sequence,
        "stdoutEvent": {"message": message, "color": "raw"},
    }


def summary_event(sequence: int, changes: dict[str, int]) -> dict[str, Any]:
    return wire.summary_event(sequence, 1_700_000_000 + sequence, changes)


def step_event(
    sequence: int,
    kind: str,
    op: str,
    old: dict[str, Any] | None,
    new: dict[str, Any] | None,
) -> dict[str, Any]:
    """A step's engine event (``resourcePreEvent``, ``resOutputsEvent`` or
    ``resOpFailedEvent``) with the resource's old and new state, as the CLI sends it."""
    urn = (new or old or {}).get("urn", "urn:pulumi:dev::proj::t::r")
    metadata: dict[str, Any] = {
        "op": op,
        "urn": urn,
        "type": "pulumi-python:dynamic:Resource",
        "old": old,
        "new": new,
        "keys": None,
        "diffs": None,
        "logical": False,
        "provider": "",
    }
    body: dict[str, Any] = {"metadata": metadata}
    if kind == "resOpFailedEvent":
        body.update(status=1, steps=1)
    return {"sequence": sequence, "timestamp": 1_700_000_000 + sequence, kind: body}


def step_metadata(name: str, value: str = "v") -> dict[str, Any]:
    """A ``StepEventStateMetadata``: what a step event says of one state of a resource."""
    return {
        "type": "pulumi-python:dynamic:Resource",
        "urn": f"urn:pulumi:dev::proj::pulumi-python:dynamic:Resource::{name}",
        "custom": True,
        "id": f"id-{name}",
        "parent": "",
        "inputs": {"value": value, "payload": "x" * 512},
        "outputs": {"value": value, "payload": "x" * 512, "digest": f"{value}/k1"},
        "provider": "",
    }


def step_events(first: int, ops: list[tuple[str, str, str | None, str | None]]) -> list[Any]:
    """A pre and an outputs event per (op, name, old value, new value); None: no state."""
    out: list[Any] = []
    for op, name, old, new in ops:
        before = None if old is None else step_metadata(name, old)
        after = None if new is None else step_metadata(name, new)
        for kind in ("resourcePreEvent", "resOutputsEvent"):
            out.append(step_event(first + len(out), kind, op, before, after))
    return out


async def count_rows(app: TestAppProtocol, table: str) -> int:
    async with services_of(app).meta.read() as conn:
        row = await conn.fetchone(f"SELECT COUNT(*) FROM {table}")
    assert row is not None
    return int(row[0])


def resource_state(name: str, **fields: Any) -> dict[str, Any]:
    """A ResourceV3 of a dynamic resource named ``name`` in stack ``dev`` of ``proj``."""
    state: dict[str, Any] = {
        "urn": f"urn:pulumi:dev::proj::pulumi-python:dynamic:Resource::{name}",
        "custom": True,
        "id": f"id-{name}",
        "type": "pulumi-python:dynamic:Resource",
        "outputs": {"name": name},
    }
    state.update(fields)
    return state


def gc_cycles_so_far() -> float:
    """Every GC cycle counted in this process, whatever its result (the registry is global)."""
    text = generate_latest(metrics.REGISTRY).decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("procella_gc_cycles_total{")
    )


@asynccontextmanager
async def started_app(settings: Settings) -> AsyncIterator[TestAppProtocol]:
    """The app, once its own first GC cycle (run as it starts) is over: the next is
    ``gc_interval_seconds`` away (an hour in the tests' settings), so what a test sets up
    for the GC is left to the cycles the test runs."""
    cycles_before_start = gc_cycles_so_far()
    async with create_app(settings).test_app() as app:
        async with asyncio.timeout(10):
            while gc_cycles_so_far() == cycles_before_start:
                await asyncio.sleep(0.02)
        yield app
