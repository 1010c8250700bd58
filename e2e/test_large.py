"""A stack of a few hundred resources: the `bulk` scenario of programs/things with 300
independent resources, created, partly updated and destroyed through the real engine.

``plain_provider`` keeps the dynamic provider out of the secrets (see the program's
docstring): otherwise a CLI without journaling re-encrypts 300 providers at every checkpoint.
"""

from __future__ import annotations

from pathlib import Path

from names import Names

from procella_testing.pulumi_cli import PulumiCLI, Stack, engine_changes, resources

COUNT = 300
CHANGED = 10  # generation 2 changes the first 10 resources (the program's default)
THING = "pulumi-python:dynamic:Resource"
# One command takes up to about 75 s alone on two cores (`up` with whole checkpoints) and
# twice that beside another busy xdist worker: the harness's default of 240 s is too tight.
TIMEOUT = 600.0


def test_hundreds_of_resources(pulumi: PulumiCLI, names: Names, project_dir: Path) -> None:
    stack = Stack(pulumi, names.stack(), project_dir).init()
    stack.ok("config", "set", "scenario", "bulk")
    stack.ok("config", "set", "count", str(COUNT))
    stack.ok("config", "set", "plain_provider", "true")
    up = ("up", "--yes", "--skip-preview", "--json")

    created = stack.ok(*up, timeout=TIMEOUT)
    assert engine_changes(created) == {"create": 301}  # + the stack; providers are not counted
    state = stack.export()
    types = [r["type"] for r in resources(state)]
    assert types.count(THING) == COUNT
    assert types.count("pulumi:pulumi:Stack") == 1
    assert types.count("pulumi:providers:pulumi-python") == 1
    assert len(types) == COUNT + 2
    assert not state["deployment"].get("pending_operations")
    ids = {r["urn"]: r["id"] for r in resources(state) if r["type"] == THING}
    assert len(set(ids.values())) == COUNT

    second = stack.ok(*up, "--config", "generation=2", timeout=TIMEOUT)
    assert engine_changes(second) == {"update": 10, "same": 291}
    after = resources(stack.export())
    things = {r["urn"].rsplit("::", 1)[1]: r for r in after if r["type"] == THING}
    assert len(after) == COUNT + 2 and len(things) == COUNT
    assert {r["urn"]: r["id"] for r in after if r["type"] == THING} == ids  # updated in place
    changed = {name for name, r in things.items() if r["outputs"]["value"].endswith("-g2")}
    assert changed == {f"item-{index}" for index in range(CHANGED)}
    assert things["item-299"]["outputs"]["value"] == "v299"

    destroyed = stack.ok("destroy", "--yes", "--skip-preview", "--json", timeout=TIMEOUT)
    assert engine_changes(destroyed) == {"delete": 301}
    assert resources(stack.export()) == []
