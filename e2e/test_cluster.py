"""Replicas are disposable: a replica that dies in the middle of a `pulumi up` costs the
CLI a retry, never its state. Collected only in the cluster topology (see conftest)."""

from __future__ import annotations

from pathlib import Path

from names import Names
from test_concurrency import STARTED_TIMEOUT, slow_stack, wait_until_inside_update

from procella_testing.cluster import Cluster
from procella_testing.processes import expect_ok
from procella_testing.pulumi_cli import PulumiCLI, Stack, resources


def test_up_survives_a_replica_killed_mid_update(
    pulumi: PulumiCLI, server: Cluster, names: Names, project_dir: Path, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    stack = slow_stack(pulumi, names, project_dir, release)
    before = server.lease_requests()
    run = stack.start_up()
    wait_until_inside_update(run, release)
    # Kill the replica the update's requests go to (the Caddyfile keeps them on one), so
    # that the rest of the update is served by a replica that saw none of it.
    grown = [
        after - earlier for earlier, after in zip(before, server.lease_requests(), strict=True)
    ]
    serving = grown.index(max(grown))
    assert grown[serving] > 0 and sorted(grown)[-2] == 0, grown
    server.kill_replica(serving)  # no drain: in-flight work on it is simply gone
    release.touch()
    expect_ok(run.wait(STARTED_TIMEOUT))

    names_in_state = {r["urn"].rsplit("::", 1)[1] for r in resources(stack.export())}
    assert {"fast", "slow"} <= names_in_state
    history = stack.ok("stack", "history", "--json").json()
    assert history[0]["result"] == "succeeded", history[0]
    # The stack is not left locked: the next update runs through the two live replicas.
    assert stack.up() == {"same": 3}


def test_every_replica_serves_the_same_stack(
    pulumi: PulumiCLI, server: Cluster, names: Names, project_dir: Path
) -> None:
    """Any replica answers any call: ask each one directly, past the load balancer."""
    stack = Stack(pulumi, names.stack(), project_dir).init()
    stack.up()
    expected = stack.export()
    live = server.live_replicas()  # the test above killed one
    assert len(live) >= 2
    for replica in live:
        status, exported = replica.api("GET", f"/api/stacks/{stack.name}/export")
        assert status == 200 and exported == expected
