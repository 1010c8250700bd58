"""A CLI killed (SIGKILL) in the middle of a create leaves a pending `creating` operation in
the state, as it does on the file:// backend. `pulumi cancel` frees the stack; a refresh
carries a pending create over (the CLI keeps them until a person decides) unless it is run
with `--clear-pending-creates`, the non-interactive answer to the prompt an interactive
refresh shows; the next `up` then creates the resource, once.

The `slow` scenario of programs/things holds the update inside the create of `slow`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from names import Names
from test_concurrency import STARTED_TIMEOUT, slow_stack, wait_until_inside_update

from procella_testing.procella_server import ProcellaServer
from procella_testing.processes import poll
from procella_testing.pulumi_cli import PulumiCLI, engine_changes, resources

# More creates in flight than the 9 up to which the CLI's delta checkpoints leave pending
# operations out (and above which they write them as `pendingOperations`).
MANY = 12


def resource_names(exported: dict[str, Any]) -> list[str]:
    return [r["urn"].rsplit("::", 1)[1] for r in resources(exported)]


def pending_operations(exported: dict[str, Any]) -> list[tuple[str, str]]:
    """(type, resource name) of the state's pending operations."""
    operations = exported["deployment"].get("pending_operations") or []
    return [(op["type"], op["resource"]["urn"].rsplit("::", 1)[1]) for op in operations]


def test_killed_create_stays_pending_until_cleared(
    pulumi: PulumiCLI, server: ProcellaServer, names: Names, project_dir: Path, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    stack = slow_stack(pulumi, names, project_dir, release)
    run = stack.start_up()
    wait_until_inside_update(run, release)
    run.kill()  # SIGKILL while the provider is creating `slow`
    release.touch()  # from now on `slow` creates at once

    interrupted = stack.export()
    assert "fast" in resource_names(interrupted)
    assert "slow" not in resource_names(interrupted)
    expected: list[tuple[str, str]] = [("creating", "slow")]
    if server.mode == "delta":
        # A CLI defect: delta checkpoints (checkpointverbatim and checkpointdelta alike)
        # carry pending operations only when there are more than 9 (marshalSpannedDeployment,
        # pkg/backend/httpstate/diffs.go), so this one is lost. That is why deltas are off by
        # default ("full" is the default for a CLI that does not journal); with more than 9
        # they survive, see the next test.
        expected = []
    assert pending_operations(interrupted) == expected

    cancelled = stack.ok("cancel", "--yes")
    assert "has been canceled" in cancelled.output, cancelled.describe()

    # Without the flag a refresh keeps the pending create (as the file:// backend does).
    refreshed = stack.ok("refresh", "--yes", "--skip-preview", "--json")
    assert engine_changes(refreshed) == {"same": 2}
    kept = stack.export()
    assert pending_operations(kept) == expected
    assert resource_names(kept) == resource_names(interrupted)

    cleared = stack.ok("refresh", "--yes", "--skip-preview", "--json", "--clear-pending-creates")
    assert engine_changes(cleared) == {"same": 2}
    after_refresh = stack.export()
    assert pending_operations(after_refresh) == []
    assert resource_names(after_refresh) == resource_names(interrupted)

    assert stack.up() == {"create": 1, "same": 2}
    final = stack.export()
    assert resource_names(final).count("slow") == 1
    assert pending_operations(final) == []


def test_many_killed_creates_stay_pending_in_every_mode(
    pulumi: PulumiCLI, server: ProcellaServer, names: Names, project_dir: Path, tmp_path: Path
) -> None:
    # Twelve creates in flight: journal entries and whole checkpoints carry them as
    # `pending_operations`; delta checkpoints as `pendingOperations`, which Procella stores
    # byte for byte and exports under the key the CLI reads.
    release = tmp_path / "release"
    stack = slow_stack(pulumi, names, project_dir, release)
    stack.ok("config", "set", "slow_count", str(MANY))
    slow_names = ["slow", *(f"slow-{i}" for i in range(1, MANY))]
    run = stack.start_up("--parallel", str(2 * MANY))
    wait_until_inside_update(run, release)

    seen: list[list[tuple[str, str]]] = [[]]

    def all_pending() -> bool:
        if run.poll() is not None:
            raise AssertionError(f"pulumi up ended early:\n{run.wait(5).describe()}")
        status, exported = server.api("GET", f"/api/stacks/{stack.name}/export")
        assert status == 200, (status, exported)
        seen[0] = pending_operations(exported)
        return len(seen[0]) >= MANY  # exactly which ones is asserted after the kill

    # The CLI begins (and records) all twelve; the program lets its provider hold them all.
    try:
        poll(all_pending, timeout=STARTED_TIMEOUT, message=f"{MANY} pending creates stored")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; the last export had {seen[0]}") from None
    run.kill()
    release.touch()

    interrupted = stack.export()
    assert sorted(pending_operations(interrupted)) == sorted(
        ("creating", name) for name in slow_names
    )
    assert not set(slow_names) & set(resource_names(interrupted))
    stack.ok("cancel", "--yes")
    cleared = stack.ok("refresh", "--yes", "--skip-preview", "--json", "--clear-pending-creates")
    assert engine_changes(cleared) == {"same": 2}
    assert pending_operations(stack.export()) == []
    assert stack.up() == {"create": MANY, "same": 2}
    final = stack.export()
    assert sorted(n for n in resource_names(final) if n.startswith("slow")) == sorted(slow_names)
