"""Teams with the real CLI: a team token (from `procella token create --team`) is shown as
one by `pulumi whoami -v`, and may update exactly the stacks its team may write.

The team and its grants are made with `procella team ...` on the server's store.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from names import Names

from procella_testing.cluster import Cluster
from procella_testing.procella_server import ProcellaServer
from procella_testing.processes import expect_fail
from procella_testing.pulumi_cli import PulumiCLI, Stack, make_project

# The subject is what a team token may do, not how the CLI sends the state: one mode (conftest).
pytestmark = pytest.mark.any_mode


def test_a_team_token_writes_where_its_team_may(
    pulumi: PulumiCLI,
    server: ProcellaServer | Cluster,
    names: Names,
    project_dir: Path,
    tmp_path: Path,
    other_cli: Callable[[str], PulumiCLI],
) -> None:
    writable = Stack(pulumi, names.stack("dev"), project_dir).init()
    readable = Stack(pulumi, names.stack("prod"), project_dir).init()
    readable.up()
    before = readable.export()

    team = ["--org", names.org, "--team", "deployers"]
    server.admin_command("team", "create", *team, "--description", "CI of the project")
    project = ["--project", names.project]
    server.admin_command(
        "team", "grant", *team, *project, "--stack", "dev", "--permission", "write"
    )
    server.admin_command(
        "team", "grant", *team, *project, "--stack", "prod", "--permission", "read"
    )
    minted = server.admin_command("token", "create", "--org", names.org, "--team", "deployers")
    ci = other_cli(minted.stdout.strip().splitlines()[-1])

    whoami = ci.ok("whoami", "-v").stdout
    assert f"User: {names.org}\n" in whoami, whoami  # a team token is named after its org
    assert "Token type: team: deployers\n" in whoami, whoami
    assert "Token name: cli\n" in whoami, whoami

    ci_dir = make_project("things", names.project, tmp_path / "ci")
    assert Stack(ci, writable.name, ci_dir).up() == {"create": 8}

    refused = Stack(ci, readable.name, ci_dir).run("up", "--yes", "--skip-preview")
    expect_fail(refused, "[403]", "member role (write)", "your token has viewer (read)")
    assert readable.export() == before  # nothing changed

    # Stacks beyond its grants do not exist for it.
    listed = ci.json("--fully-qualify-stack-names", "stack", "ls", "--json", "-a", "-o", names.org)
    assert sorted(row["name"] for row in listed) == sorted([readable.name, writable.name])
    expect_fail(ci.run("stack", "init", names.stack("other"), cwd=ci_dir), "[403]")
