"""The update lifecycle as a state machine: any order of calls, from several clients.

Hypothesis drives the real app (its lifespan, the configured backend) through the Quart
test client with four clients (the administrator, two members, a viewer) on two stacks:
create stack, create/start updates (checkpointing or journaling, previews too), whole,
verbatim and delta checkpoints, journal entries, events, lease renewals, cancel, complete,
an abandoned CLI (its lease expires), and the export, in any order, with stale and foreign
update tokens, out-of-turn sequence numbers and wrong deployment versions.

After every step:
- no answer was a 5xx, and every 4xx had the ``{"code","message"}`` body;
- a step answered with a 4xx changed nothing: the export of every stack, the stacks, and
  every update row (status, version, checkpoint sequence and hash, journal entries,
  lease expiry) are as they were before it;
- the export of every stack is its last acknowledged state (the model below): the bytes
  of the last checkpoint answered 204, or for a journaling update its base with the
  acknowledged journal entries replayed; versions, statuses, active updates agree.

The app runs without a checkpoint cache, so every export rebuilds from what was stored.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import hypothesis
from hypothesis import HealthCheck
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from quart import typing as quart_typing

from procella import create_app, lifecycle
from procella.auth.models import Role
from procella.metadata.queries import updates as update_q
from procella.settings import Settings
from procella.state.checkpoints import EMPTY_DEPLOYMENT
from tests.helpers import (
    DEFAULT_ORG,
    Api,
    Update,
    compact,
    delta_between,
    expire_lease,
    journal_entry,
    make_token,
    resource_state,
    services_of,
    sha256_hex,
    stdout_event,
    strict_json,
)
from tests.property import scaled

WRITE = 5  # JournalEntryKind Write: a whole new snapshot
ADMIN, ALICE, BOB, VIEWER = range(4)
clients = st.sampled_from([ADMIN, ALICE, BOB, VIEWER])
members = st.sampled_from([ADMIN, ALICE, BOB])
leases = st.sampled_from(["own"] * 6 + ["other", "bogus"])
_machines = itertools.count()

# Deployments: up to three resources, each with a small output value.
deployments = st.lists(
    st.tuples(st.sampled_from("abcd"), st.integers(0, 3)), max_size=3, unique_by=lambda r: r[0]
).map(
    lambda items: {
        "manifest": {"time": "2026-01-01T00:00:00Z", "magic": "", "version": "v3.276.0"},
        "resources": [resource_state(name, outputs={"v": value}) for name, value in items],
    }
)


def resources_of(text: bytes) -> list[Any]:
    found: list[Any] = json.loads(text)["deployment"].get("resources") or []
    return found


@dataclass
class MStack:
    path: str  # org/project/stack
    exists: bool = False
    version: int = 0
    active: str = ""
    # The last acknowledged state: its exact bytes, or (after a journaling update, whose
    # state the server writes itself) its resources.
    text: bytes | None = EMPTY_DEPLOYMENT
    resources: list[Any] = field(default_factory=list)

    def state_resources(self) -> list[Any]:
        return resources_of(self.text) if self.text is not None else self.resources


@dataclass
class MUpdate:
    stack: MStack
    id: str
    preview: bool
    status: str = lifecycle.NOT_STARTED
    token: str = ""
    version: int | None = None
    journal: bool = False
    live: bool = False  # the lease has not expired
    seq: int = 0
    sha: str | None = None
    last_text: bytes | None = None
    base: list[Any] = field(default_factory=list)  # a journal's base resources
    entries: dict[int, dict[str, Any]] = field(default_factory=dict)  # in arrival order

    def ref(self, stack: MStack | None = None) -> Update:
        return Update((stack or self.stack).path, self.id, token=self.token)

    @property
    def running_live(self) -> bool:
        return self.status == lifecycle.RUNNING and self.live

    def checkpointing(self) -> bool:
        return self.running_live and not self.journal and not self.preview

    def journal_resources(self) -> list[Any]:
        writes = [e for e in self.entries.values() if e["kind"] == WRITE]
        return writes[-1]["newSnapshot"].get("resources") or [] if writes else self.base


class Harness:
    """One app for all examples (each example works on stacks of its own), and an API
    client per user."""

    def __init__(self, settings: Settings) -> None:
        self.context = create_app(settings).test_app()

    async def open(self) -> None:
        self.app: quart_typing.TestAppProtocol = await self.context.__aenter__()
        tokens: list[str | None] = [None]
        for role, login in ((Role.MEMBER, "alice"), (Role.MEMBER, "bob"), (Role.VIEWER, "vic")):
            tokens.append(await make_token(self.app, DEFAULT_ORG, role, login))
        self.apis = [
            Api(self.app.test_client()) if t is None else Api(self.app.test_client(), t)
            for t in tokens
        ]

    async def close(self) -> None:
        # Quart's protocol types the exit arguments without None, as no exception is.
        await self.context.__aexit__(None, None, None)  # type: ignore[arg-type]


class Lifecycle(RuleBasedStateMachine):
    def __init__(self, runner: asyncio.Runner, harness: Harness) -> None:
        super().__init__()
        self.run = runner.run
        self.harness = harness
        prefix = f"m{next(_machines)}"
        self.stacks = [MStack(f"{DEFAULT_ORG}/{prefix}/s{i}") for i in range(2)]
        self.all: list[MUpdate] = []
        self.statuses: list[int] = []  # of this step's requests (0: not a request)
        self.before: Any = None

    # Requests ---------------------------------------------------------------------

    def call(self, client: int, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        api = self.harness.apis[client]
        if body is not None:
            kw["body"] = body
        response = self.run(api.call(method, path, **kw))
        data = self.run(response.get_data())
        status = response.status_code
        assert status < 500, (method, path, status, data[:300])
        if status >= 400:
            error = strict_json(data)
            assert error["code"] == status and isinstance(error["message"], str), error
        self.statuses.append(status)
        return status, data

    def lease_for(self, update: MUpdate, lease: str) -> tuple[str, bool]:
        """The update token to send, and whether it is the update's own lease."""
        if lease == "own" and update.token:
            return update.token, True
        others = [u.token for u in self.all if u.token and u is not update]
        if lease == "other" and others:
            return others[0], False
        return "pul-update-bogus", False

    def expect(self, status: int, expected: int, what: str) -> None:
        hypothesis.event(f"{what.split()[0]} {status}")
        assert status == expected, f"{what}: {status}, the model expected {expected}"

    # Stacks -----------------------------------------------------------------------

    @initialize(client=members)
    def first_stack(self, client: int) -> None:
        self.create_stack(0, client)

    @precondition(lambda self: not all(stack.exists for stack in self.stacks))
    @rule(client=clients)
    def create_other_stack(self, client: int) -> None:
        self.create_stack(1, client)

    def create_stack(self, which: int, client: int) -> None:
        stack = self.stacks[which]
        org, project, name = stack.path.split("/")
        status, _ = self.call(client, "POST", f"/api/stacks/{org}/{project}", {"stackName": name})
        expected = 403 if client == VIEWER else 409 if stack.exists else 200
        self.expect(status, expected, "create stack")
        if status == 200:
            stack.exists = True

    # Updates, user token ------------------------------------------------------------

    def create_update(self, which: int, client: int, kind: str) -> MUpdate | None:
        stack = self.stacks[which]
        body = {"name": "p", "runtime": "python", "options": {"dryRun": kind == "dry-run"}}
        segment = "preview" if kind == "preview" else "update"
        status, data = self.call(client, "POST", f"/api/stacks/{stack.path}/{segment}", body)
        expected = 403 if client == VIEWER else 200 if stack.exists else 404
        self.expect(status, expected, "create update")
        if status != 200:
            return None
        update = MUpdate(stack, json.loads(data)["updateID"], preview=kind != "update")
        self.all.append(update)
        return update

    @rule(
        which=st.sampled_from([0, 0, 1]),
        client=st.sampled_from([ADMIN, ALICE, BOB] * 2 + [VIEWER]),
        kind=st.sampled_from(["update", "update", "update", "preview", "dry-run"]),
        start=st.sampled_from([True, True, True, False]),
        journal=st.booleans(),
        first=st.none() | deployments,
    )
    def begin(
        self, which: int, client: int, kind: str, start: bool, journal: bool, first: Any
    ) -> None:
        """What the CLI does: create an update, start it at once (mostly), and maybe save
        a first state."""
        update = self.create_update(which, client, kind)
        if update is None or not start:
            return
        self.start_update(update, client, journal)
        if first is not None and update.running_live and not update.preview:
            if journal:
                self.journal_once(update, "own", [("new", first)])
            else:
                self.verbatim_once(update, "own", first, "next", 3)

    def pick(self, data: st.DataObject, *prefer: Callable[[MUpdate], bool]) -> MUpdate:
        """An update, most often the first kind in ``prefer`` there is one of (where the
        interesting answers are), else any: ended, not started, abandoned, a preview."""
        if data.draw(st.integers(0, 7), label="preferred") > 0:
            for wanted in prefer:
                preferred = [u for u in self.all if wanted(u)]
                if preferred:
                    return data.draw(st.sampled_from(preferred), label="update")
        return data.draw(st.sampled_from(self.all), label="update")

    @precondition(lambda self: self.all)
    @rule(data=st.data(), client=clients, journal=st.booleans())
    def start(self, data: st.DataObject, client: int, journal: bool) -> None:
        update = self.pick(data, lambda u: u.status == lifecycle.NOT_STARTED)
        self.start_update(update, client, journal)

    def start_update(self, update: MUpdate, client: int, journal: bool) -> None:
        body = {"tags": None, "journalVersion": 1 if journal else 0}
        status, data = self.call(client, "POST", update.ref().path, body)
        stack = update.stack
        holder = next(
            (
                u
                for u in self.all
                if u.stack is stack and not u.preview and u.status == lifecycle.RUNNING
            ),
            None,
        )
        taken = not update.preview and holder is not None and holder.live
        if client == VIEWER:
            expected = 403
        elif update.status != lifecycle.NOT_STARTED or taken:
            expected = 409
        else:
            expected = 200
        self.expect(status, expected, "start")
        if status != 200:
            return
        started = json.loads(data)
        if not update.preview:
            if holder is not None:  # abandoned: the new update takes the stack over
                holder.status = lifecycle.CANCELLED
            stack.version += 1
            stack.active = update.id
            update.version = stack.version
        assert started["version"] == stack.version
        assert started["journalVersion"] == (1 if journal else 0)
        update.status, update.token, update.live = lifecycle.RUNNING, started["token"], True
        update.journal = journal
        if journal and not update.preview:
            # From now on the export is the base with this update's journal replayed.
            update.base = stack.state_resources()
            stack.text, stack.resources = None, update.base

    @precondition(lambda self: self.all)
    @rule(
        data=st.data(),
        client=clients,
        how=st.sampled_from(["cancel", "cancel", "cancel on another stack", "abandon"]),
    )
    def interrupt(self, data: st.DataObject, client: int, how: str) -> None:
        """``pulumi cancel`` (a user token), or the CLI holding the update dies."""
        update = self.pick(data, lambda u: u.status not in lifecycle.TERMINAL)
        if how == "abandon":
            if update.running_live:
                self.run(expire_lease(self.harness.app, update.id))
                update.live = False
                self.statuses.append(0)
            return
        other = how == "cancel on another stack"
        stack = self.stacks[1] if update.stack is self.stacks[0] else self.stacks[0]
        path = update.ref(stack if other else None).path
        status, _ = self.call(client, "POST", f"{path}/cancel")
        if client == VIEWER:
            expected = 403
        elif other:
            expected = 404
        else:
            expected = 204
        self.expect(status, expected, "cancel")
        if status == 204 and update.status not in lifecycle.TERMINAL:
            update.status = lifecycle.CANCELLED
            if update.stack.active == update.id:
                update.stack.active = ""

    # Updates, update token ----------------------------------------------------------

    def token_check(self, update: MUpdate, own: bool, live: bool = True) -> int | None:
        """The status the lease check answers with, or None when it passes."""
        if not own:
            return 403
        if live and not update.running_live:
            return 403
        return None

    # Saves come in bursts of one to three calls on one update, as a CLI sends them.

    @precondition(lambda self: self.all)
    @rule(data=st.data(), calls=st.integers(1, 3))
    def checkpoint(self, data: st.DataObject, calls: int) -> None:
        update = self.pick(data, MUpdate.checkpointing)
        for _ in range(calls):
            self.checkpoint_once(
                update,
                data.draw(leases, label="lease"),
                data.draw(deployments, label="deployment"),
                data.draw(st.sampled_from([3, 3, 3, 0, 5]), label="version"),
            )

    def checkpoint_once(self, update: MUpdate, lease: str, deployment: Any, version: int) -> None:
        token, own = self.lease_for(update, lease)
        body = {"isInvalid": False, "version": version, "deployment": deployment}
        status, _ = self.call(
            ADMIN, "PATCH", f"{update.ref().path}/checkpoint", body, gzip_body=True, lease=token
        )
        text = compact({"version": version, "deployment": deployment})
        expected = self.token_check(update, own)
        if expected is None:
            expected = 400 if version != 3 or update.preview or update.journal else 204
        self.expect(status, expected, "checkpoint")
        if status == 204 and sha256_hex(text) != update.sha:
            self.saved(update, text)

    def saved(self, update: MUpdate, text: bytes) -> None:
        update.seq += 1
        update.sha = sha256_hex(text)
        update.last_text = update.stack.text = text

    def sequence(self, update: MUpdate, choice: str) -> int:
        return {"next": update.seq + 1, "same": update.seq, "skip": update.seq + 2}[choice]

    def sequence_check(self, update: MUpdate, sequence: int, digest: str) -> int | None:
        """What a numbered step is answered before it is applied: 204 for a retry of the
        last one (same number and hash), 409 out of turn, None for the next one."""
        if sequence < 1:
            return 400
        if update.preview or update.journal:
            return 400
        if sequence == update.seq and digest == update.sha:
            return 204
        if sequence != update.seq + 1:
            return 409
        return None

    @precondition(lambda self: self.all)
    @rule(data=st.data(), calls=st.integers(1, 3))
    def verbatim(self, data: st.DataObject, calls: int) -> None:
        update = self.pick(data, MUpdate.checkpointing)
        for _ in range(calls):
            self.verbatim_once(
                update,
                data.draw(leases, label="lease"),
                data.draw(deployments, label="deployment"),
                data.draw(st.sampled_from(["next", "next", "same", "skip", "retry"]), label="seq"),
                data.draw(st.sampled_from([3, 3, 3, 2, 7]), label="version"),
            )

    def verbatim_once(
        self, update: MUpdate, lease: str, deployment: Any, choice: str, version: int
    ) -> None:
        token, own = self.lease_for(update, lease)
        if choice == "retry" and update.last_text is not None:
            text, sequence = update.last_text, update.seq
        else:
            text = compact({"version": version, "deployment": deployment})
            sequence = self.sequence(update, "next" if choice == "retry" else choice)
        version = json.loads(text)["version"]
        api = self.harness.apis[ADMIN]
        status = self.checked(
            self.run(api.verbatim(update.ref(), text, sequence, version=version, lease=token))
        )
        expected = self.token_check(update, own)
        if expected is None:
            if not 1 <= version <= 4:
                expected = 400
            else:
                expected = self.sequence_check(update, sequence, sha256_hex(text)) or 204
        self.expect(status, expected, f"verbatim {choice}")
        if status == 204 and not (sequence == update.seq and sha256_hex(text) == update.sha):
            self.saved(update, text)

    def checked(self, response: Any) -> int:
        data = self.run(response.get_data())
        status: int = response.status_code
        assert status < 500, (status, data[:300])
        if status >= 400:
            error = strict_json(data)
            assert error["code"] == status and isinstance(error["message"], str), error
        self.statuses.append(status)
        return status

    @precondition(lambda self: self.all)
    @rule(data=st.data(), calls=st.integers(1, 3))
    def delta(self, data: st.DataObject, calls: int) -> None:
        update = self.pick(
            data, lambda u: u.checkpointing() and u.last_text is not None, MUpdate.checkpointing
        )
        for _ in range(calls):
            self.delta_once(
                update,
                data.draw(leases, label="lease"),
                data.draw(deployments, label="deployment"),
                data.draw(st.sampled_from(["next", "next", "next", "same", "skip"]), label="seq"),
                data.draw(st.sampled_from([True, True, False]), label="hash_ok"),
            )

    def delta_once(
        self, update: MUpdate, lease: str, deployment: Any, choice: str, hash_ok: bool
    ) -> None:
        token, own = self.lease_for(update, lease)
        prev = update.last_text if update.last_text is not None else EMPTY_DEPLOYMENT
        text = compact({"version": 3, "deployment": deployment})
        edits = delta_between(prev, text)
        digest = sha256_hex(text if hash_ok else text + b" ")
        sequence = self.sequence(update, choice)
        api = self.harness.apis[ADMIN]
        status = self.checked(
            self.run(api.delta(update.ref(), edits, digest, sequence, lease=token))
        )
        expected = self.token_check(update, own)
        if expected is None:
            expected = self.sequence_check(update, sequence, digest)
            if expected is None:
                expected = 400 if update.last_text is None or not hash_ok else 204
        self.expect(status, expected, f"delta {choice} hash_ok={hash_ok}")
        if status == 204 and not (sequence == update.seq and digest == update.sha):
            self.saved(update, text)

    @precondition(lambda self: self.all)
    @rule(data=st.data(), calls=st.integers(1, 3))
    def journal(self, data: st.DataObject, calls: int) -> None:
        update = self.pick(
            data, lambda u: u.running_live and u.journal and not u.preview, MUpdate.checkpointing
        )
        modes = st.sampled_from(["new", "new", "new", "resend", "conflict", "invalid", "twice"])
        for _ in range(calls):
            batch = data.draw(st.lists(st.tuples(modes, deployments), min_size=1, max_size=3))
            self.journal_once(update, data.draw(leases, label="lease"), batch)

    def journal_once(self, update: MUpdate, lease: str, batch: list[tuple[str, Any]]) -> None:
        token, own = self.lease_for(update, lease)
        entries: list[dict[str, Any]] = []
        next_id = max(update.entries, default=0) + 1
        invalid = conflict = False
        for mode, snapshot in batch:
            known = list(update.entries.values())
            if mode == "resend" and known:
                entries.append(known[-1])
            elif mode == "conflict" and known:
                entry = journal_entry(WRITE, known[0]["sequenceID"], 0, newSnapshot=snapshot)
                conflict = conflict or entry != known[0]
                entries.append(entry)
            elif mode == "invalid":
                entries.append(journal_entry(11, next_id, 0))
                invalid = True
            elif mode == "twice" and entries:
                entries.append(
                    journal_entry(WRITE, entries[-1]["sequenceID"], 0, newSnapshot=snapshot)
                )
            else:
                entries.append(journal_entry(WRITE, next_id, 0, newSnapshot=snapshot))
                next_id += 1
        # One sequence ID with two different bodies in a batch.
        first: dict[int, dict[str, Any]] = {}
        twice = any(first.setdefault(e["sequenceID"], e) != e for e in entries)
        response = self.run(self.harness.apis[ADMIN].journal(update.ref(), entries, lease=token))
        status = self.checked(response)
        expected = self.token_check(update, own)
        if expected is None:
            if invalid or update.preview or not update.journal or twice:
                expected = 400
            else:
                expected = 409 if conflict else 204
        self.expect(status, expected, "journal")
        if status == 204:
            for entry in entries:
                update.entries.setdefault(entry["sequenceID"], entry)
            if not update.preview:
                update.stack.resources = update.journal_resources()

    @precondition(lambda self: self.all)
    @rule(
        data=st.data(),
        lease=leases,
        call=st.sampled_from(["events", "renew"]),
        duration=st.sampled_from([300, 10**9, 0, -5, None]),
    )
    def heartbeat(self, data: st.DataObject, lease: str, call: str, duration: int | None) -> None:
        """Engine events, or a lease renewal: neither changes a state."""
        update = self.pick(data, lambda u: u.running_live)
        token, own = self.lease_for(update, lease)
        api = self.harness.apis[ADMIN]
        expected = self.token_check(update, own)
        if call == "events":
            response = self.run(api.events(update.ref(), [stdout_event(0, "hi")], lease=token))
            expected = expected or 204
        else:
            response = self.run(api.renew(update.ref(), duration, lease=token))
            if expected is None:
                expected = 400 if duration is not None and duration < 1 else 200
        self.expect(self.checked(response), expected, call)

    @precondition(lambda self: self.all)
    @rule(
        data=st.data(),
        lease=leases,
        final=st.sampled_from(["succeeded", "succeeded", "failed", "cancelled", "done"]),
    )
    def complete(self, data: st.DataObject, lease: str, final: str) -> None:
        update = self.pick(data, lambda u: u.status == lifecycle.RUNNING, lambda u: u.token != "")
        token, own = self.lease_for(update, lease)
        response = self.run(self.harness.apis[ADMIN].complete(update.ref(), final, lease=token))
        status = self.checked(response)
        expected = self.token_check(update, own, live=False)
        if expected is None:
            if final not in ("succeeded", "failed", "cancelled"):
                expected = 400
            elif update.status in lifecycle.TERMINAL:
                expected = 204 if update.status == final else 409
            elif not update.running_live:
                expected = 403
            else:
                expected = 204
        self.expect(status, expected, f"complete {final}")
        if status == 204 and update.status not in lifecycle.TERMINAL:
            update.status = final
            if update.stack.active == update.id:
                update.stack.active = ""

    # Invariants ---------------------------------------------------------------------

    async def snapshot(self) -> dict[str, Any]:
        api = self.harness.apis[ADMIN]
        seen: dict[str, Any] = {}
        for stack in self.stacks:
            export = await api.export(stack.path)
            assert export.status_code == (200 if stack.exists else 404), await export.get_data()
            if stack.exists:
                seen[stack.path] = (await export.get_data(), await api.stack_json(stack.path))
        meta = services_of(self.harness.app).meta
        async with meta.read() as conn:
            for update in self.all:
                row = await update_q.get(conn, update.id)
                assert row is not None
                seen[update.id] = (
                    row.status,
                    row.version,
                    row.checkpoint_seq,
                    row.checkpoint_sha,
                    row.journal_count,
                    row.lease_expires_at,
                    row.journal_version,
                )
        return seen

    @invariant()
    def the_server_agrees_with_the_model(self) -> None:
        seen = self.run(self.snapshot())
        if self.statuses and all(400 <= status < 500 for status in self.statuses):
            assert seen == self.before, "a step answered with a 4xx changed something"
        self.before, self.statuses = seen, []
        for stack in self.stacks:
            if not stack.exists:
                continue
            export, info = seen[stack.path]
            if stack.text is not None:
                assert export == stack.text, (export, stack.text)
            else:
                assert resources_of(export) == stack.resources
            assert info["version"] == stack.version
            assert info["activeUpdate"] == stack.active
        for update in self.all:
            status, version, seq, sha, count, _, journal_version = seen[update.id]
            assert status == update.status, (update.id, status, update.status)
            assert version == update.version
            assert (seq, sha) == (update.seq, update.sha)
            assert count == len(update.entries)
            assert journal_version == (1 if update.journal else 0)


def test_update_lifecycle(settings: Settings) -> None:
    harness = Harness(settings.replace(checkpoint_cache_bytes=0))
    with asyncio.Runner() as runner:
        runner.run(harness.open())
        try:
            # Hypothesis calls what it is given; its stubs ask for the class itself.
            run_state_machine_as_test(
                lambda: Lifecycle(runner, harness),  # type: ignore[arg-type]
                settings=settings_for_machine(),
            )
        finally:
            runner.run(harness.close())


def settings_for_machine() -> hypothesis.settings:
    return hypothesis.settings(
        max_examples=scaled(0.3),
        stateful_step_count=40,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
