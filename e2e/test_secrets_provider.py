"""Secrets in the state through the service secrets provider (`batch-encrypt`/`batch-decrypt`).

Without journaling (the `delta` and `full` modes) the CLI keeps a shadow journal next to the
checkpoints it sends and, at the end of every update, compares the snapshot it sent with the
one the journal rebuilds. Its ciphertext cache is all or nothing: when one secret of a
checkpoint is new, every secret of it goes to `batch-encrypt` again, while the journal entry
of an older resource keeps that resource's first ciphertexts. With a fresh random nonce per
encryption the two snapshots then differ, and the CLI reports an ``errorEvent`` "snapshot
mismatch ... Ciphertext: A != B" yet exits 0 (Automation API callers see the event). Procella
gives one plaintext one ciphertext within an update, and by default across the stack's
updates (procella/secrets/service.py).
`things` stores every dynamic provider as a secret; a secret config value (which the CLI also
hands to the dynamic provider as its config) and two secret stack outputs add more.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from names import Names

from procella_testing.processes import Result
from procella_testing.pulumi_cli import PulumiCLI, Stack, engine_changes, resources, root_outputs

SECRET = "s3cr3t-config-value"


def engine_events(result: Result) -> list[dict[str, Any]]:
    """The JSON engine events of ``up/refresh/destroy --json --skip-preview``."""
    events = []
    for line in result.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                events.append(json.loads(line))
    return events


def assert_no_error_event(result: Result) -> None:
    errors = [e["errorEvent"] for e in engine_events(result) if "errorEvent" in e]
    assert not errors, f"error events: {errors}\n{result.describe()}"
    assert "snapshot mismatch" not in result.output, result.describe()


def run_clean(stack: Stack, *args: str) -> dict[str, int]:
    result = stack.ok(*args, "--yes", "--skip-preview", "--json")
    assert_no_error_event(result)
    return engine_changes(result)


def by_urn(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The state's resources by URN (an update lists them in the order its steps ended)."""
    return {r["urn"]: r for r in resources(state)}


def test_updates_with_secrets_report_no_snapshot_mismatch(
    pulumi: PulumiCLI, names: Names, project_dir: Path
) -> None:
    stack = Stack(pulumi, names.stack("dev"), project_dir).init()
    stack.ok("config", "set", "--secret", "secret", SECRET)

    assert run_clean(stack, "up") == {"create": 8}
    created = by_urn(stack.export())
    # Nothing changes: every secret is serialized again, from the state the CLI decrypted,
    # and the dynamic provider, a secret the SDK makes anew at every run, is sent to
    # `batch-encrypt` again. Each gets the ciphertext it had, so no resource's state changes.
    assert run_clean(stack, "up") == {"same": 8}
    assert by_urn(stack.export()) == created
    assert run_clean(stack, "refresh") == {"same": 8}

    stack.ok("config", "set", "generation", "2")
    changes = run_clean(stack, "up")
    assert changes == {"update": 1, "replace": 1, "delete": 1, "same": 5}, changes

    # The secrets survived all of it, and the state holds them only as ciphertext.
    exported = stack.export()
    assert SECRET not in json.dumps(exported)
    outputs = root_outputs(exported)
    assert outputs["config_secret"]["4dabf18193072939515e22adb298388d"] == (
        "1b47061264138c4ac30d75fd1eb44270"
    )
    shown = stack.ok("stack", "output", "--json", "--show-secrets").json()
    assert shown["config_secret"] == SECRET
    assert shown["secret_out"] == "hush-hush-output-value"

    stack.ok("state", "unprotect", "--all", "--yes")
    assert run_clean(stack, "destroy") == {"delete": 7}
