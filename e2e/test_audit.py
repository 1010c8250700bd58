"""The audit log through the real CLI: `pulumi org audit-log list|export` (CLI v3.276) read
what a session of another user did, in order, each action with its principal."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path

import pytest
from names import Names

from procella_testing.cluster import Cluster
from procella_testing.procella_server import ProcellaServer
from procella_testing.pulumi_cli import PulumiCLI, Stack

# The subject is what the audit log records, not how the CLI sends the state: one mode (conftest).
pytestmark = pytest.mark.any_mode


def test_a_session_is_in_the_audit_log(
    server: ProcellaServer | Cluster,
    pulumi: PulumiCLI,
    other_cli: Callable[[str], PulumiCLI],
    names: Names,
    project_dir: Path,
) -> None:
    mia = other_cli(server.create_token(names.org, "member", "mia"))
    stack = Stack(mia, names.stack(), project_dir).init()
    assert stack.up() == {"create": 8}
    stack.ok("stack", "tag", "set", "team", "blue")
    removed = Stack(pulumi, names.stack(), project_dir)  # an admin removes it
    removed.ok("stack", "rm", "--force", "--yes")

    # An org admin reads it (a fresh login: the CLI checks the org against the orgs the login
    # reported).
    ada = other_cli(server.create_token(names.org, "admin", "ada"))
    listed = ada.ok("org", "audit-log", "list", "--org", names.org, "--all", "--output", "json")
    events = [(e["event"], e["user"]["githubLogin"]) for e in reversed(listed.json()["events"])]
    assert events == [
        ("token.create", "procella"),  # `procella token create` on the server
        ("stack.create", "mia"),
        ("update.start", "mia"),
        ("update.complete", "mia"),
        ("stack.tags.update", "mia"),
        ("stack.delete", "admin"),
        ("token.create", "procella"),  # ada's
    ], listed.describe()
    by_users = [e for e in listed.json()["events"] if e["user"]["githubLogin"] != "procella"]
    by_event = {e["event"]: e for e in by_users}
    assert by_event["update.complete"]["tokenName"] == "update lease"
    assert by_event["stack.delete"]["description"] == f"deleted stack {names.stack()} (forced)"
    assert {e["sourceIP"] for e in by_users} == {"127.0.0.1"}

    only_mia = ada.ok(
        "org", "audit-log", "list", "--org", names.org, "--user", "mia", "--output", "json"
    )
    assert only_mia.json()["count"] == 4

    exported = ada.ok("org", "audit-log", "export", "--org", names.org, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert [r["event"] for r in reversed(rows)] == [event for event, _ in events]
