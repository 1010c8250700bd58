"""`pulumi new` from a local template creates the project files and the stack on the server.

The template (templates/e2e-python) has no requirements.txt and plain `runtime: python`. The
old language host still makes a venv in the project and upgrades pip, setuptools and wheel
in it, so pip is pointed at the toolchain's wheels/ folder and needs no index (offline).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from names import Names

from procella_testing import pulumi_toolchain
from procella_testing.procella_server import ProcellaServer
from procella_testing.pulumi_cli import TEMPLATES_DIR, PulumiCLI, Stack

# The subject is pulumi new from a template, not how the CLI sends the state: one mode (conftest).
pytestmark = pytest.mark.any_mode

TEMPLATE = TEMPLATES_DIR / "e2e-python"


def test_new_from_local_template(
    pulumi: PulumiCLI,
    server: ProcellaServer,
    names: Names,
    toolchain: Path,
    tmp_path: Path,
) -> None:
    target = tmp_path / "created"
    target.mkdir()
    stack_name = names.stack("dev")
    pulumi.ok(
        "new",
        str(TEMPLATE),
        "--yes",
        "--stack",
        stack_name,
        "--name",
        names.project,
        "--description",
        "made by the e2e suite",
        "--dir",
        str(target),
        env=pulumi_toolchain.offline_pip_env(toolchain),
    )

    manifest = (target / "Pulumi.yaml").read_text()
    assert f"name: {names.project}" in manifest
    assert "description: made by the e2e suite" in manifest
    assert "hello from the e2e template" in (target / "Pulumi.dev.yaml").read_text()

    status, body = server.api("GET", f"/api/stacks/{stack_name}")
    assert status == 200, (status, body)
    assert (body["orgName"], body["projectName"], body["stackName"]) == (
        names.org,
        names.project,
        "dev",
    )
    rows = pulumi.json(
        "--fully-qualify-stack-names", "stack", "ls", "--json", "-o", names.org, "-p", names.project
    )
    assert [row["name"] for row in rows] == [stack_name]

    # The generated project deploys.
    stack = Stack(pulumi, stack_name, target)
    assert stack.up() == {"create": 1}
    assert stack.ok("stack", "output", "greeting").stdout.strip() == "hello from the e2e template"
