"""Locust users that behave like the Pulumi CLI against Procella, to load its database.

    PYTHONPATH=. LOAD_TOKEN=<token> locust -f loadtest/locustfile.py --headless -u 20 -r 5 -t 60s \
        --host http://127.0.0.1:9090

Four scenarios, one user class each (weights in brackets; run a subset by naming the
classes after the options):
* DeployUser [4]  `pulumi up --skip-preview` on its own stack: create the update, start it
  (takes the stack's lock), export, LOAD_CHECKPOINTS checkpoints that grow the state by one
  resource each (verbatim, or deltas when the server advertises them and the texts pass its
  cutoff, or always with LOAD_DELTA=on), engine-event batches, a lease renewal, complete.
* ReadUser [3]    `pulumi stack` / `stack export`, `stack ls`, `stack history` on a stack it
  filled once at start.
* PreviewUser [2] `pulumi preview` (POST .../preview): the same lifecycle as a dry run, no
  checkpoints and no lock; and `pulumi up`'s dry run on its stack while its own deploy
  holds the lock, which must not get a 409.
* SecretsUser [1] batch-encrypt LOAD_SECRETS values, then batch-decrypt them and compare.

Every user creates its own stacks (never shared), so a 409 on start is a bug and counts as
a failure. Requests are named by route template, e.g.
"/api/stacks/[stack]/update/[id]/checkpointverbatim", so statistics aggregate per route.
Any non-2xx is a failure, except the 404 of `stack init`'s existence check. Calls the CLI
retries (every GET, checkpoints, events, renew, complete, secrets, cancel) are retried the
same way on network errors, 429 and 5xx (1 s, 2 s, 4 s), each failed attempt counted.

Only the standard library, locust and pulumi_wire (beside this file; it uses
procella_testing.wire, standard library only, found through PYTHONPATH=<checkout>) are
imported: locust patches the process with gevent when imported, so nothing asyncio-based may
come first.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pulumi_wire as wire
from locust import FastHttpUser, between, task

CONFIG = wire.LoadConfig.from_env()
RUN = secrets.token_hex(3)  # stack names of this locust process never meet another's
_serial = itertools.count(1)

RETRY_DELAYS = (1.0, 2.0, 4.0)  # the CLI: up to 4 attempts, 1 s then doubling

# Request names: route templates, so statistics aggregate over stacks and updates.
N_CAPABILITIES = "/api/capabilities"
N_USER_STACKS = "/api/user/stacks"
N_CREATE_STACK = "/api/stacks/[org]/[project]"
N_STACK = "/api/stacks/[stack]"
N_EXPORT = "/api/stacks/[stack]/export"
N_HISTORY = "/api/stacks/[stack]/updates"
N_ENCRYPT = "/api/stacks/[stack]/batch-encrypt"
N_DECRYPT = "/api/stacks/[stack]/batch-decrypt"
N_UPDATE = "/api/stacks/[stack]/update/[id]"
N_CHECKPOINT = N_UPDATE + "/checkpointverbatim"
N_DELTA = N_UPDATE + "/checkpointdelta"
N_EVENTS = N_UPDATE + "/events/batch"
N_RENEW = N_UPDATE + "/renew_lease"
N_COMPLETE = N_UPDATE + "/complete"
N_CANCEL = N_UPDATE + "/cancel"

_IDS = re.compile(r"[0-9a-f]{8}(?:-?[0-9a-f]{4,})+|\b[0-9a-f]{16,}\b|\b\d+\b")
MAX_PAGES = 50  # `stack ls` follows continuation tokens; bounded here


@dataclass(frozen=True)
class Reply:
    status: int
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content) if self.content else None


@dataclass
class Stack:
    path: str  # /api/stacks/{org}/{project}/{stack}
    deployment: wire.Deployment
    broken: bool = False  # an update may still hold it: the next task takes a new stack


def _describe(status: int, name: str, content: bytes | None) -> str:
    """A failure message without ids or numbers, so locust groups alike failures."""
    if status == 409 and name == N_UPDATE:
        # Users never share a stack and dry runs never take its lock: this is a bug.
        return "HTTP 409 on start: the stack was held (users never share one; previews never lock)"
    message = ""
    try:
        body = json.loads(content or b"")
        message = str(body.get("message", "")) if isinstance(body, dict) else ""
    except ValueError:
        message = (content or b"")[:120].decode(errors="replace")
    if status == 0:
        return "connection error"
    return f"HTTP {status}: {_IDS.sub('#', message)[:160]}"


class PulumiUser(FastHttpUser):  # type: ignore[misc]  # locust: not in the lint venv
    """Speaks the CLI's dialect: headers, gzip bodies, retries. One stack at a time."""

    abstract = True
    wait_time = between(0, CONFIG.wait_max)
    kind = "user"  # prefix of this user's stack names
    command = "up"  # the `cmd=` of the User-Agent

    def on_start(self) -> None:
        caps = self.call("GET", "/api/capabilities", N_CAPABILITIES)
        self.delta = wire.DeltaPolicy.from_capabilities(caps.json() if caps else None)
        self.stack: Stack | None = None
        self.ensure_stack()

    # HTTP ------------------------------------------------------------------------------

    def call(
        self,
        method: str,
        path: str,
        name: str,
        *,
        body: bytes | None = None,
        gzip: bool = False,
        lease: str | None = None,
        retry: bool = False,
        expected: tuple[int, ...] = (),
        check: Callable[[bytes], str | None] | None = None,
    ) -> Reply | None:
        """One CLI call; None once it has failed (after the CLI's retries, if it retries).
        ``check`` looks at a 2xx body and returns why it is wrong, or None."""
        headers = {
            "Accept": wire.ACCEPT,
            "Content-Type": "application/json",
            "Accept-Encoding": "gzip",
            "User-Agent": f"pulumi-cli/1 ({wire.CLI_VERSION}; linux; cmd={self.command})",
        }
        if lease is not None:
            headers["Authorization"] = f"update-token {lease}"
        else:
            headers["Authorization"] = f"token {CONFIG.token}"
        if gzip and body is not None:
            body = wire.gzipped(body)
            headers["Content-Encoding"] = "gzip"
        attempts = len(RETRY_DELAYS) + 1 if retry or method == "GET" else 1
        for attempt in range(attempts):
            with self.client.request(
                method,
                path,
                name=name,
                data=body,  # bytes go out as they are
                headers=headers,
                catch_response=True,
            ) as response:
                status = response.status_code or 0
                content = response.content or b""
                if 200 <= status < 300 or status in expected:
                    wrong = check(content) if check is not None and status < 300 else None
                    if wrong is None:
                        response.success()
                        return Reply(status, content)
                    response.failure(wrong)
                    return None
                response.failure(_describe(status, name, content))
            if attempt + 1 == attempts or not (status in (0, 429) or status >= 500):
                return None
            time.sleep(RETRY_DELAYS[attempt])  # gevent-patched: other users keep running
        return None

    # Stacks ----------------------------------------------------------------------------

    def ensure_stack(self) -> Stack | None:
        """This user's stack, created as `pulumi stack init` does when there is none."""
        if self.stack is not None and not self.stack.broken:
            return self.stack
        name = f"{self.kind}-{RUN}-{next(_serial)}"
        project_path = f"/api/stacks/{CONFIG.org}/{CONFIG.project}"
        path = f"{project_path}/{name}"
        # `stack init` first makes sure the stack does not exist: a 404 is the answer it wants.
        if self.call("GET", path, N_STACK, expected=(404,)) is None:
            return None
        body = wire.create_stack_body(name, CONFIG.project)
        if self.call("POST", project_path, N_CREATE_STACK, body=body) is None:
            return None
        base = max(CONFIG.resources - CONFIG.checkpoints, 0)
        deployment = wire.Deployment(
            url=self.host or "", org=CONFIG.org, project=CONFIG.project, stack=name, base=base
        )
        self.stack = Stack(path, deployment)
        return self.stack

    # The update lifecycle ------------------------------------------------------------------

    def run_update(
        self,
        stack: Stack,
        *,
        preview: bool,
        kind: str | None = None,
        while_started: Callable[[], object] | None = None,
    ) -> bool:
        """`pulumi up --skip-preview`, or with ``preview`` `pulumi preview` (kind "preview")
        or the dry run that starts `pulumi up` (kind "update"), call for call.
        ``while_started`` runs once the update is started (holding the lock if not a dry run).
        """
        path = stack.path
        self.call("GET", path, N_STACK)
        kind = kind or ("preview" if preview else "update")
        program = wire.update_program_body(CONFIG.project, dry_run=preview, message="load")
        created = self.call("POST", f"{path}/{kind}", f"{N_STACK}/{kind}", body=program)
        if created is None:
            return False
        update = f"{path}/update/{created.json()['updateID']}"
        started = self.call("POST", update, N_UPDATE, body=wire.start_update_body(CONFIG.project))
        if started is None:
            return False
        lease = str(started.json()["token"])
        if while_started is not None:
            while_started()
        self.call("GET", f"{path}/export", N_EXPORT)  # the base snapshot of the engine
        events = wire.Events(preview=preview)
        events.prelude(CONFIG.project)
        ok = self._steps(stack, update, lease, events, preview=preview)
        base = stack.deployment.base_count
        changes = {"same": base, "create": CONFIG.checkpoints}
        events.summary(changes)
        ok = self._send_events(update, lease, events, flush=True) and ok
        status = "succeeded" if ok else "failed"
        done = self.call(
            "POST",
            f"{update}/complete",
            N_COMPLETE,
            body=wire.complete_body(status),
            lease=lease,
            retry=True,
        )
        if done is None:
            self._abandon(stack, update)
        return ok and done is not None

    def _steps(
        self, stack: Stack, update: str, lease: str, events: wire.Events, *, preview: bool
    ) -> bool:
        texts = None if preview else stack.deployment.begin_update()
        for sequence in range(1, CONFIG.checkpoints + 1):
            index = stack.deployment.base_count + sequence - 1
            events.resource(stack.deployment.urn(index))
            if texts is not None:
                prev = texts.text
                text, edits = texts.step()
                if not self._checkpoint(update, lease, sequence, prev, text, edits):
                    return False
            if not self._send_events(update, lease, events, flush=False):
                return False
            if sequence == (CONFIG.checkpoints + 1) // 2 and not preview:
                # The CLI renews every 2.5 minutes; one renewal per update keeps the route
                # in the mix without pretending updates last that long.
                body = wire.RENEW_LEASE_BODY
                renewed = self.call(
                    "POST", f"{update}/renew_lease", N_RENEW, body=body, lease=lease, retry=True
                )
                if renewed is None:
                    return False
        return True

    def _checkpoint(
        self,
        update: str,
        lease: str,
        sequence: int,
        prev: bytes,
        text: bytes,
        edits: list[wire.TextEdit],
    ) -> bool:
        if prev and self.delta.use_delta(CONFIG.delta, prev, text):
            body = wire.delta_body(edits, text, sequence)
            sent = self.call(
                "PATCH",
                f"{update}/checkpointdelta",
                N_DELTA,
                body=body,
                gzip=True,
                lease=lease,
                retry=True,
            )
            if sent is not None:
                return True
            # As the CLI does: a failed delta is sent whole, with the same sequence number.
        body = wire.verbatim_body(text, sequence)
        sent = self.call(
            "PATCH",
            f"{update}/checkpointverbatim",
            N_CHECKPOINT,
            body=body,
            gzip=True,
            lease=lease,
            retry=True,
        )
        return sent is not None

    def _send_events(self, update: str, lease: str, events: wire.Events, *, flush: bool) -> bool:
        while (batch := events.take(flush=flush)) is not None:
            sent = self.call(
                "POST",
                f"{update}/events/batch",
                N_EVENTS,
                body=batch,
                gzip=True,
                lease=lease,
                retry=True,
            )
            if sent is None:
                return False
        return True

    def _abandon(self, stack: Stack, update: str) -> None:
        """`pulumi cancel` after a lifecycle that could not complete; if even that fails,
        the stack may still be held, so the next task starts on a new one."""
        if self.call("POST", f"{update}/cancel", N_CANCEL, retry=True) is None:
            stack.broken = True


class DeployUser(PulumiUser):
    """`pulumi up --skip-preview`, over and over, on a stack of its own."""

    weight = 4
    kind = "deploy"

    @task
    def up(self) -> None:
        self.command = "up"
        stack = self.ensure_stack()
        if stack is not None:
            self.run_update(stack, preview=False)


class ReadUser(PulumiUser):
    """The read-only commands, on a stack it filled with one update at start."""

    weight = 3
    kind = "read"

    def on_start(self) -> None:
        super().on_start()
        if self.stack is not None:
            self.run_update(self.stack, preview=False)

    @task(3)
    def stack_export(self) -> None:
        self.command = "stack-export"
        stack = self.ensure_stack()
        if stack is not None:
            self.call("GET", stack.path, N_STACK)
            self.call("GET", f"{stack.path}/export", N_EXPORT)

    @task(2)
    def stack_history(self) -> None:
        self.command = "stack-history"
        stack = self.ensure_stack()
        if stack is not None:
            self.call("GET", stack.path, N_STACK)
            self.call("GET", f"{stack.path}/updates?pageSize=10&page=1", N_HISTORY)

    @task(1)
    def stack_ls(self) -> None:
        self.command = "stack-ls"
        query = f"project={CONFIG.project}"
        for _ in range(MAX_PAGES):
            page = self.call("GET", f"/api/user/stacks?{query}", N_USER_STACKS)
            token = page.json().get("continuationToken") if page is not None else None
            if not token:
                return
            query = f"project={CONFIG.project}&continuationToken={token}"


class PreviewUser(PulumiUser):
    """Dry runs, which never take the stack's lock: `pulumi preview` on its stack, and a
    pull-request style preview (`pulumi up`'s dry run) while its own deploy holds the lock,
    which must not get a 409 (pulumi/pulumi#8642)."""

    weight = 2
    kind = "preview"

    def on_start(self) -> None:
        super().on_start()
        if self.stack is not None:
            self.run_update(self.stack, preview=False)

    @task(3)
    def preview(self) -> None:
        self.command = "preview"
        stack = self.ensure_stack()
        if stack is not None:
            self.run_update(stack, preview=True)

    @task(1)
    def preview_beside_deploy(self) -> None:
        self.command = "up"
        stack = self.ensure_stack()
        if stack is not None:
            dry_run = functools.partial(self.run_update, stack, preview=True, kind="update")
            self.run_update(stack, preview=False, while_started=dry_run)


class SecretsUser(PulumiUser):
    """The service secrets provider: batch-encrypt, then batch-decrypt what came back."""

    weight = 1
    kind = "secrets"

    @task
    def round_trip(self) -> None:
        self.command = "config"
        stack = self.ensure_stack()
        if stack is None:
            return
        plaintexts = wire.secret_plaintexts(CONFIG.secrets, stack.path)
        encrypted = self.call(
            "POST",
            f"{stack.path}/batch-encrypt",
            N_ENCRYPT,
            body=wire.batch_encrypt_body(plaintexts),
            gzip=True,
            retry=True,
        )
        if encrypted is None:
            return
        ciphertexts = list(encrypted.json()["ciphertexts"])

        def same_plaintexts(content: bytes) -> str | None:
            # The CLI asserts every ciphertext is a key of the answer.
            got = json.loads(content or b"{}").get("plaintexts") or {}
            if [got.get(c) for c in ciphertexts] != plaintexts:
                return "batch-decrypt did not return the encrypted plaintexts"
            return None

        self.call(
            "POST",
            f"{stack.path}/batch-decrypt",
            N_DECRYPT,
            body=wire.batch_decrypt_body(ciphertexts),
            gzip=True,
            retry=True,
            check=same_plaintexts,
        )
