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

from e2e_harness import Names, ProcellaServer, PulumiCLI, engine_changes, resources
from test_concurrency import slow_stack, wait_until_inside_update


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
        # A known CLI defect, filed separately: delta checkpoints (checkpointverbatim and
        # checkpointdelta alike) drop pending operations, because marshalSpannedDeployment
        # (pkg/backend/httpstate/diffs.go) writes them only when there are more than 9, and
        # then under the key `pendingOperations` instead of `pending_operations`.
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
