"""Updates through the real engine: preview, up, refresh, outputs, import/export, state edits,
history, destroy and stack removal. The `things` program (programs/things) is config-driven:
generation 1 creates 8 resources (stack, alpha, bravo, charlie, a component with two
children, protected `guarded`) plus the default dynamic provider; generation 2 updates
alpha, replaces bravo and deletes charlie."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from names import Names

from procella_testing.cluster import Cluster
from procella_testing.procella_server import ProcellaServer
from procella_testing.processes import expect_fail
from procella_testing.pulumi_cli import (
    PulumiCLI,
    Stack,
    by_name,
    engine_changes,
    make_project,
    resources,
    root_outputs,
)

SECRET_OUTPUT = "hush-hush-output-value"  # programs/things exports it with Output.secret
SECRET_SIGNATURE = "4dabf18193072939515e22adb298388d"
GENERATION_1 = {"alpha", "bravo", "charlie", "group", "group-one", "group-two", "guarded"}
CREATED_BY_GENERATION_1 = {"create": 8}  # the provider resource is not counted
GENERATION_2_CHANGES = {"same": 5, "update": 1, "replace": 1, "delete": 1}


def decrypted(stack: Stack) -> dict[str, dict[str, Any]]:
    """The stack's resources by name, secrets in plaintext: the CLI re-encrypts every secret
    (fresh nonces) whenever it writes a resource, even an unchanged one."""
    return by_name(stack.ok("stack", "export", "--show-secrets").json())


def without_dependencies(exported: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {key: value for key, value in resource.items() if key != "propertyDependencies"}
        for resource in resources(exported)
    ]


def deployed(pulumi: PulumiCLI, names: Names, project_dir: Path, stack: str = "dev") -> Stack:
    """A stack with generation 1 of the program deployed."""
    target = Stack(pulumi, names.stack(stack), project_dir).init()
    assert target.up() == CREATED_BY_GENERATION_1
    return target


def test_preview_changes_nothing(pulumi: PulumiCLI, names: Names, project_dir: Path) -> None:
    stack = Stack(pulumi, names.stack(), project_dir).init()
    preview = stack.ok("preview", "--json").json()
    assert preview["changeSummary"] == CREATED_BY_GENERATION_1
    assert {step["op"] for step in preview["steps"]} == {"create"}

    assert resources(stack.export()) == []
    text = stack.ok("preview").stdout
    assert "+ 8 to create" in text, text
    # Previews are not updates: no history entry.
    assert stack.ok("stack", "history", "--json").json() == []


def test_up_refresh_and_second_up(pulumi: PulumiCLI, names: Names, project_dir: Path) -> None:
    stack = deployed(pulumi, names, project_dir)
    first = stack.export()
    state = by_name(first)
    assert set(state) >= GENERATION_1
    assert len(resources(first)) == 9  # + pulumi:providers:pulumi-python default
    assert state["guarded"].get("protect") is True
    assert state["group"]["type"] == "e2e:index:Group"
    assert state["group-one"]["parent"] == state["group"]["urn"]
    assert state["group-two"]["parent"] == state["group"]["urn"]
    assert state["alpha"]["outputs"]["value"] == "a1"
    assert first["deployment"]["secrets_providers"]["type"] == "service"
    # The secret output is stored encrypted (by the service), never as plaintext.
    secret = root_outputs(first)["secret_out"]
    assert secret[SECRET_SIGNATURE] and secret.get("ciphertext")
    assert SECRET_OUTPUT not in json.dumps(first)

    # Nothing drifted (the provider reads back what the state says): refresh stores the same
    # resources in the same order, less their empty propertyDependencies (the engine's read
    # step leaves them out; the file:// backend stores the same), as an update of its own.
    before = stack.ok("stack", "export", "--show-secrets").json()
    refreshed = stack.ok("refresh", "--yes", "--skip-preview", "--json")
    assert engine_changes(refreshed) == {"same": 8}
    after = stack.ok("stack", "export", "--show-secrets").json()
    assert without_dependencies(after) == without_dependencies(before)
    assert [entry["kind"] for entry in stack.ok("stack", "history", "--json").json()] == [
        "refresh",
        "update",
    ]

    assert stack.up("--config", "generation=2") == GENERATION_2_CHANGES
    exported = stack.export()
    second = by_name(exported)
    # One bravo (the replaced one is gone, not kept with `delete: true`), no charlie.
    assert len(resources(exported)) == 8
    assert not any(r.get("delete") for r in resources(exported))
    assert not exported["deployment"].get("pending_operations")
    assert set(second) == set(state) - {"charlie"}
    assert second["alpha"]["id"] == state["alpha"]["id"]  # updated in place
    assert second["alpha"]["outputs"]["value"] == "a2"
    assert second["bravo"]["id"] != state["bravo"]["id"]  # replaced
    assert second["bravo"]["outputs"]["replace_key"] == "k2"
    assert second["guarded"]["id"] == state["guarded"]["id"]
    outputs = stack.ok("stack", "output", "--json").json()
    assert outputs["names"] == ["alpha", "bravo"]
    assert outputs["generation"] == 2

    # Nothing left to do: the stored checkpoint is exactly what the engine last wrote.
    assert stack.up("--config", "generation=2") == {"same": 7}


def test_targeted_up_and_destroy(pulumi: PulumiCLI, names: Names, project_dir: Path) -> None:
    """`--target` confines an update to one resource; the rest of the program waits for the
    next plain `up`."""
    stack = deployed(pulumi, names, project_dir)
    state = decrypted(stack)

    targeted = stack.up("--config", "generation=2", "--target", state["alpha"]["urn"])
    assert targeted == {"update": 1, "same": 7}, targeted
    after = decrypted(stack)
    assert set(after) == set(state)  # charlie is not deleted
    assert after["alpha"]["id"] == state["alpha"]["id"]
    assert after["alpha"]["outputs"]["value"] == "a2"
    assert after["bravo"] == state["bravo"]  # not replaced
    assert after["charlie"] == state["charlie"]

    # The rest of generation 2 (the config was saved by the targeted up).
    assert stack.up() == {"same": 6, "replace": 1, "delete": 1}
    after = decrypted(stack)
    assert set(after) == set(state) - {"charlie"}
    assert after["bravo"]["id"] != state["bravo"]["id"]

    destroyed = stack.ok(
        "destroy", "--yes", "--skip-preview", "--json", "--target", after["alpha"]["urn"]
    )
    assert engine_changes(destroyed) == {"delete": 1, "same": 6}
    remaining = decrypted(stack)
    assert set(remaining) == set(after) - {"alpha"}
    assert remaining["bravo"] == after["bravo"]
    # The next update puts alpha back and touches nothing else.
    assert stack.up() == {"create": 1, "same": 6}


def test_stack_output_secrets(pulumi: PulumiCLI, names: Names, project_dir: Path) -> None:
    stack = Stack(pulumi, names.stack(), project_dir).init()
    stack.ok("config", "set", "--secret", "secret", "from-config-secret")
    assert stack.up() == CREATED_BY_GENERATION_1

    masked = stack.ok("stack", "output", "--json").json()
    assert masked["secret_out"] == "[secret]"
    assert masked["config_secret"] == "[secret]"
    assert masked["alpha_value"] == "a1"
    assert stack.ok("stack", "output", "secret_out").stdout.strip() == "[secret]"

    shown = stack.ok("stack", "output", "--json", "--show-secrets").json()
    assert shown["secret_out"] == SECRET_OUTPUT
    assert shown["config_secret"] == "from-config-secret"
    single = stack.ok("stack", "output", "secret_out", "--show-secrets")
    assert single.stdout.strip() == SECRET_OUTPUT

    exported = stack.ok("stack", "export", "--show-secrets").json()
    assert root_outputs(exported)["secret_out"]["plaintext"] == json.dumps(SECRET_OUTPUT)


def test_export_import_round_trip(
    pulumi: PulumiCLI, names: Names, project_dir: Path, tmp_path: Path
) -> None:
    stack = deployed(pulumi, names, project_dir)
    saved = tmp_path / "state.json"
    stack.ok("stack", "export", "--file", str(saved))
    original = json.loads(saved.read_text())
    assert len(resources(original)) == 9
    # Import re-encrypts every secret (fresh nonces), so compare the decrypted states.
    plain = resources(stack.ok("stack", "export", "--show-secrets").json())

    stack.ok("stack", "import", "--file", str(saved))
    assert resources(stack.ok("stack", "export", "--show-secrets").json()) == plain
    # The imported state is a working base for the next update.
    assert stack.up() == {"same": 8}

    # Into a fresh stack: same project and stack name in another org, so the URNs match.
    fresh = Stack(pulumi, f"{names.org}-b/{names.project}/dev", project_dir).init()
    fresh.ok("stack", "import", "--file", str(saved))
    # The CLI decrypted with the old stack and encrypted for the new one, which can decrypt.
    assert resources(fresh.ok("stack", "export", "--show-secrets").json()) == plain
    assert fresh.ok("stack", "output", "secret_out", "--show-secrets").stdout.strip() == (
        SECRET_OUTPUT
    )


def test_state_delete_and_unprotect(pulumi: PulumiCLI, names: Names, project_dir: Path) -> None:
    stack = deployed(pulumi, names, project_dir)
    state = stack.resources()

    stack.ok("state", "delete", state["charlie"]["urn"], "--yes")
    after = stack.resources()
    assert "charlie" not in after
    assert set(after) == set(state) - {"charlie"}

    expect_fail(stack.run("state", "delete", state["guarded"]["urn"], "--yes"), "protected")
    assert "guarded" in stack.resources()
    expect_fail(stack.run("destroy", "--yes", "--skip-preview"), "protected")

    stack.ok("state", "unprotect", state["guarded"]["urn"], "--yes")
    assert not stack.resources()["guarded"].get("protect")
    stack.ok("destroy", "--yes", "--skip-preview")
    assert resources(stack.export()) == []


def test_history(pulumi: PulumiCLI, names: Names, project_dir: Path) -> None:
    stack = Stack(pulumi, names.stack(), project_dir).init()
    stack.up("--message", "first deploy")
    stack.ok("refresh", "--yes", "--skip-preview")
    stack.up("--config", "generation=2", "--message", "second deploy")

    history = stack.ok("stack", "history", "--json").json()
    assert [entry["kind"] for entry in history] == ["update", "refresh", "update"]
    assert [entry["result"] for entry in history] == ["succeeded"] * 3
    newest, refresh, oldest = history
    assert newest["message"] == "second deploy"
    assert oldest["message"] == "first deploy"
    assert newest["resourceChanges"] == GENERATION_2_CHANGES
    assert refresh["resourceChanges"] == {"same": 8}
    assert oldest["resourceChanges"] == CREATED_BY_GENERATION_1
    assert newest["config"][f"{names.project}:generation"]["value"] == "2"
    versions = [entry["version"] for entry in history]
    assert versions == sorted(versions, reverse=True) and len(set(versions)) == 3, versions
    starts = [entry["startTime"] for entry in history]
    assert starts == sorted(starts, reverse=True), starts

    # Paging: one entry per page, newest first.
    page = stack.ok("stack", "history", "--json", "--page-size", "1", "--page", "2").json()
    assert [entry["version"] for entry in page] == [versions[1]]


def test_destroy_and_stack_rm(pulumi: PulumiCLI, names: Names, project_dir: Path) -> None:
    stack = deployed(pulumi, names, project_dir)
    expect_fail(stack.run("stack", "rm", "--yes"), "still has resources")
    assert len(resources(stack.export())) == 9

    stack.ok("state", "unprotect", "--all", "--yes")
    destroyed = stack.ok("destroy", "--yes", "--skip-preview", "--json")
    assert engine_changes(destroyed) == {"delete": 8}
    assert resources(stack.export()) == []
    assert stack.ok("stack", "history", "--json").json()[0]["kind"] == "destroy"
    stack.ok("stack", "rm", "--yes")
    expect_fail(pulumi.run("stack", "select", stack.name, cwd=project_dir), "no stack named")

    # --force removes a stack that still has resources.
    forced = deployed(pulumi, names, project_dir, stack="forced")
    forced.ok("stack", "rm", "--yes", "--force")
    listing = pulumi.json("stack", "ls", "--json", "-a", "-o", names.org, cwd=project_dir)
    assert listing == []


def test_renamed_stack_keeps_its_resources(
    pulumi: PulumiCLI, names: Names, project_dir: Path, tmp_path: Path
) -> None:
    """A rename rewrites the URNs in the state (as the service and the DIY backend do), so the
    next update finds every resource instead of recreating them under the new name."""
    stack = deployed(pulumi, names, project_dir)
    ids = {name: r["id"] for name, r in stack.resources().items() if r.get("id")}

    renamed = Stack(pulumi, names.stack("renamed"), project_dir)
    stack.ok("stack", "rename", renamed.name)
    state = renamed.export()
    assert {r["urn"].split("::")[0] for r in resources(state)} == {"urn:pulumi:renamed"}
    assert {name: r["id"] for name, r in by_name(state).items() if r.get("id")} == ids
    assert renamed.up() == {"same": 8}

    # Into another project: the URNs take the new project too.
    moved_project = names.project + "-moved"
    moved = Stack(pulumi, names.stack("moved", project=moved_project), project_dir)
    renamed.ok("stack", "rename", moved.name)
    moved.cwd = make_project("things", moved_project, tmp_path)
    state = moved.export()
    prefixes = {tuple(r["urn"].split("::")[:2]) for r in resources(state)}
    assert prefixes == {("urn:pulumi:moved", moved_project)}, prefixes
    assert moved.up() == {"same": 8}
    outputs = moved.ok("stack", "output", "--json", "--show-secrets").json()
    assert outputs["secret_out"] == SECRET_OUTPUT


def step_events_of(server: ProcellaServer | Cluster, stack: Stack, update_id: str) -> list[Any]:
    """Every step event of an update, read page by page as a console would."""
    found: list[Any] = []
    token = None
    while True:
        query = "" if token is None else f"?continuationToken={token}"
        path = f"/api/stacks/{stack.name}/update/{update_id}/events{query}"
        status, page = server.api("GET", path)
        assert status == 200, (status, page)
        found += [e for e in page["events"] if "resOutputsEvent" in e or "resourcePreEvent" in e]
        token = page["continuationToken"]
        if token is None:
            return found


def test_step_events_read_back_with_their_states(
    server: ProcellaServer | Cluster, pulumi: PulumiCLI, names: Names, project_dir: Path
) -> None:
    # Procella stores the states of step events apart, once each (procella/updates/events.py):
    # what a reader gets back must still be each event's own.
    stack = Stack(pulumi, names.stack(), project_dir).init()
    stack.up()
    stack.up("--config", "generation=2")
    status, history = server.api("GET", f"/api/stacks/{stack.name}/updates")
    assert status == 200, history
    newest, oldest = (entry["updateID"] for entry in history["updates"])
    created = step_events_of(server, stack, oldest)
    changed = step_events_of(server, stack, newest)
    for event in created + changed:
        body = event.get("resourcePreEvent") or event["resOutputsEvent"]
        metadata = body["metadata"]
        for side in ("old", "new"):
            if metadata[side] is not None:
                assert metadata[side]["urn"] == metadata["urn"]
                assert isinstance(metadata[side]["inputs"], dict)
    same = [e["resOutputsEvent"]["metadata"] for e in changed if "resOutputsEvent" in e]
    same = [m for m in same if m["op"] == "same" and not m["type"].startswith("pulumi:providers:")]
    assert len(same) == GENERATION_2_CHANGES["same"]
    # A `same` step's states are those its resource was created with (the stack's outputs
    # are registered anew by every run, so its resOutputsEvent differs).
    outputs = {
        e["resOutputsEvent"]["metadata"]["urn"]: e["resOutputsEvent"]["metadata"]["new"]
        for e in created
        if "resOutputsEvent" in e
    }
    for metadata in same:
        if metadata["type"] != "pulumi:pulumi:Stack":
            assert metadata["old"] == metadata["new"] == outputs[metadata["urn"]]
