"""One active update per stack: a killed CLI leaves its lease, `pulumi cancel` clears it, and
two concurrent `pulumi up` runs never both proceed.

The `slow` scenario of programs/things holds an update open: resource `slow` writes
``<wait_file>.started`` when its create begins and then waits until ``wait_file`` exists.
"""

from __future__ import annotations

from pathlib import Path

from names import Names

from procella_testing.procella_server import ProcellaServer
from procella_testing.processes import Background, Result, expect_fail, expect_ok, poll
from procella_testing.pulumi_cli import PulumiCLI, Stack, resources

STARTED_TIMEOUT = 120.0
# The CLI's message for a 409 from "start update" (ConflictingUpdateError) links here.
CONFLICT = "update-conflicts"


def slow_stack(pulumi: PulumiCLI, names: Names, project_dir: Path, release: Path) -> Stack:
    stack = Stack(pulumi, names.stack(), project_dir).init()
    stack.ok("config", "set", "scenario", "slow")
    stack.ok("config", "set", "wait_file", str(release))
    return stack


def wait_until_inside_update(run: Background, release: Path) -> None:
    """Poll until the program is inside the slow create, failing early if the CLI exits."""
    marker = release.with_name(release.name + ".started")

    def started() -> bool:
        if run.poll() is not None:
            raise AssertionError(f"pulumi up ended early:\n{run.wait(5).describe()}")
        return marker.exists()

    poll(started, timeout=STARTED_TIMEOUT, message=f"{marker} (update reached `slow`)")


def test_killed_update_conflicts_until_cancelled(
    pulumi: PulumiCLI, server: ProcellaServer, names: Names, project_dir: Path, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    stack = slow_stack(pulumi, names, project_dir, release)
    run = stack.start_up()
    wait_until_inside_update(run, release)
    status, body = server.api("GET", f"/api/stacks/{stack.name}")
    assert status == 200 and body.get("activeUpdate"), (status, body)

    run.kill()  # SIGKILL: the CLI never completes the update or releases its lease
    release.touch()  # from now on `slow` creates at once
    blocked = stack.run("up", "--yes", "--skip-preview")
    expect_fail(blocked, CONFLICT)
    # Previews never take the lock (pulumi/pulumi#8642): one runs beside the stuck update.
    preview = stack.ok("preview", "--json").json()
    assert preview["changeSummary"].get("create") == 1, preview["changeSummary"]

    cancelled = stack.ok("cancel", "--yes")
    assert "has been canceled" in cancelled.output, cancelled.describe()
    changes = stack.up()
    assert changes == {"create": 1, "same": 2}, changes
    assert {"fast", "slow"} <= {r["urn"].rsplit("::", 1)[1] for r in resources(stack.export())}

    history = stack.ok("stack", "history", "--json").json()
    assert history[0]["result"] == "succeeded"
    # The killed update is over, and not as a success.
    assert history[1]["kind"] == "update"
    assert history[1]["result"] not in ("succeeded", "in-progress"), history[1]


def test_concurrent_updates_one_conflicts(
    pulumi: PulumiCLI, names: Names, project_dir: Path, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    stack = slow_stack(pulumi, names, project_dir, release)
    runs = [stack.start_up(), stack.start_up()]

    def first_finished() -> Background | None:
        return next((run for run in runs if run.poll() is not None), None)

    # The winner blocks inside `slow` until released, so the loser must finish first.
    loser_run: Background = poll(
        first_finished,
        timeout=STARTED_TIMEOUT,
        message="one of two concurrent `pulumi up` to fail (both still running: no lock?)",
    )
    winner_run = runs[1] if loser_run is runs[0] else runs[0]
    loser: Result = loser_run.wait(5)
    expect_fail(loser, CONFLICT)
    assert winner_run.poll() is None, "the winner ended before it was released"

    wait_until_inside_update(winner_run, release)
    release.touch()
    expect_ok(winner_run.wait(STARTED_TIMEOUT))
    assert {"fast", "slow"} <= {r["urn"].rsplit("::", 1)[1] for r in resources(stack.export())}
    history = stack.ok("stack", "history", "--json").json()
    assert [entry["result"] for entry in history].count("succeeded") == 1, history
