"""Login, identity and stack management: init, ls (filters), select, tags, rename, rm."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from names import Names

from procella_testing.procella_server import ProcellaServer
from procella_testing.processes import expect_fail
from procella_testing.pulumi_cli import PulumiCLI, make_project

DEFAULT_ORG = "organization"  # PROCELLA_DEFAULT_ORG is left at its default
NOT_FOUND = "no stack named"  # the CLI's message for a 404 from GET /api/stacks/o/p/s


def whoami_fields(text: str) -> dict[str, str]:
    """`whoami -v` prints `Key: value` lines."""
    pairs = (line.split(": ", 1) for line in text.splitlines() if ": " in line)
    return {key.strip(): value.strip() for key, value in pairs}


def listed(cli: PulumiCLI, *filters: str, cwd: Path | None = None) -> dict[str, dict[str, object]]:
    """`stack ls --json` with fully qualified names, keyed by name."""
    rows = cli.json("--fully-qualify-stack-names", "stack", "ls", "--json", *filters, cwd=cwd)
    return {str(row["name"]): row for row in rows}


def test_login_and_whoami(pulumi: PulumiCLI, server: ProcellaServer) -> None:
    fields = whoami_fields(pulumi.ok("whoami", "-v").stdout)
    # "Backend URL" is the web console's URL, which the CLI derives only for api.* hosts
    # (or PULUMI_CONSOLE_DOMAIN); for a self-hosted http://127.0.0.1:port it is empty.
    assert "Backend URL" in pulumi.ok("whoami", "-v").stdout
    user = fields.get("User", "")
    assert user, fields
    assert DEFAULT_ORG in fields.get("Organizations", "").split(", "), fields
    assert "Token type" in fields, fields

    assert pulumi.ok("whoami").stdout.strip() == user
    as_json = pulumi.json("whoami", "--json")
    assert as_json["user"] == user
    assert DEFAULT_ORG in as_json["organizations"]

    # Login stored the account for this URL, as later commands (and secrets) rely on it.
    credentials = json.loads((pulumi.home / "credentials.json").read_text())
    assert credentials["current"] == server.url
    assert credentials["accounts"][server.url]["username"] == user


def test_whoami_with_a_created_token(
    pulumi: PulumiCLI,
    server: ProcellaServer,
    names: Names,
    project_dir: Path,
    other_cli: Callable[[str], PulumiCLI],
) -> None:
    # The site admin creates the org on demand with its first stack.
    pulumi.ok("stack", "init", names.stack(), cwd=project_dir)
    login = f"user-{names.org}"
    member = other_cli(server.create_token(names.org, "member", user=login))

    assert member.ok("whoami").stdout.strip() == login
    info = member.json("whoami", "--json")
    assert info["user"] == login
    assert names.org in info["organizations"]
    fields = whoami_fields(member.ok("whoami", "--verbose").stdout)
    assert fields["User"] == login
    assert names.org in fields["Organizations"].split(", ")


def test_stack_ls_filters_and_tags(
    pulumi: PulumiCLI, names: Names, project_dir: Path, tmp_path: Path
) -> None:
    dev, prod = names.stack("dev"), names.stack("prod")
    other_project = names.project + "-other"
    other_dir = make_project("things", other_project, tmp_path)
    misc = names.stack("misc", project=other_project)
    for stack in (dev, prod):
        pulumi.ok("stack", "init", stack, cwd=project_dir)
    pulumi.ok("stack", "init", misc, cwd=other_dir)

    # -o and -p: exactly this project's stacks.
    assert set(listed(pulumi, "-o", names.org, "-p", names.project)) == {dev, prod}
    # -a: every project of the org.
    assert set(listed(pulumi, "-a", "-o", names.org)) == {dev, prod, misc}
    # Without -a or -p, `stack ls` keeps to the current folder's project.
    assert set(listed(pulumi, "-o", names.org, cwd=other_dir)) == {misc}

    pulumi.ok("stack", "tag", "set", "tier", "gold", "--stack", dev, cwd=project_dir)
    pulumi.ok("stack", "tag", "set", "tier", "silver", "--stack", misc, cwd=other_dir)
    tags = pulumi.json("stack", "tag", "ls", "--json", "--stack", dev, cwd=project_dir)
    assert tags["tier"] == "gold"
    # The CLI adds its own tags at stack creation; they must survive a tag update.
    assert tags.get("pulumi:project") == names.project

    assert set(listed(pulumi, "-a", "-o", names.org, "-t", "tier=gold")) == {dev}
    assert set(listed(pulumi, "-a", "-o", names.org, "-t", "tier")) == {dev, misc}

    pulumi.ok("stack", "tag", "rm", "tier", "--stack", dev, cwd=project_dir)
    tags = pulumi.json("stack", "tag", "ls", "--json", "--stack", dev, cwd=project_dir)
    assert "tier" not in tags
    assert tags.get("pulumi:project") == names.project
    assert set(listed(pulumi, "-a", "-o", names.org, "-t", "tier")) == {misc}


def test_stack_select_rename_and_rm(pulumi: PulumiCLI, names: Names, project_dir: Path) -> None:
    dev, prod = names.stack("dev"), names.stack("prod")
    for stack in (dev, prod):
        pulumi.ok("stack", "init", stack, cwd=project_dir)

    pulumi.ok("stack", "select", dev, cwd=project_dir)
    shown = pulumi.ok("--fully-qualify-stack-names", "stack", "--show-name", cwd=project_dir)
    assert shown.stdout.strip() == dev
    # `current` comes from the project folder's workspace settings.
    rows = listed(pulumi, "-o", names.org, "-p", names.project, cwd=project_dir)
    assert rows[dev]["current"] is True and rows[prod]["current"] is False
    expect_fail(pulumi.run("stack", "select", names.stack("absent"), cwd=project_dir), NOT_FOUND)

    # Rename within the project.
    renamed = names.stack("production")
    pulumi.ok("stack", "rename", renamed, "--stack", prod, cwd=project_dir)
    assert set(listed(pulumi, "-o", names.org, "-p", names.project)) == {dev, renamed}
    expect_fail(pulumi.run("stack", "select", prod, cwd=project_dir), NOT_FOUND)

    # Rename into another project of the same org.
    moved_project = names.project + "-moved"
    moved = names.stack("prod2", project=moved_project)
    pulumi.ok("stack", "rename", moved, "--stack", renamed, cwd=project_dir)
    assert set(listed(pulumi, "-a", "-o", names.org)) == {dev, moved}
    assert set(listed(pulumi, "-o", names.org, "-p", moved_project)) == {moved}
    assert pulumi.json("stack", "export", "--stack", moved, cwd=project_dir)["version"] >= 3

    pulumi.ok("stack", "rm", "--yes", "--stack", dev, cwd=project_dir)
    assert set(listed(pulumi, "-a", "-o", names.org)) == {moved}
    expect_fail(pulumi.run("stack", "select", dev, cwd=project_dir), NOT_FOUND)


def test_stack_init_rejects_a_duplicate(pulumi: PulumiCLI, names: Names, project_dir: Path) -> None:
    pulumi.ok("stack", "init", names.stack(), cwd=project_dir)
    expect_fail(pulumi.run("stack", "init", names.stack(), cwd=project_dir), "already exists")


def test_stack_ls_follows_pages(
    pulumi: PulumiCLI, server: ProcellaServer, names: Names, project_dir: Path
) -> None:
    # More stacks than one page of GET /api/user/stacks holds (the CLI follows
    # continuationToken). Created through the API: the listing is what is under test.
    count = 130
    for index in range(count):
        status, body = server.api(
            "POST", f"/api/stacks/{names.org}/{names.project}", body={"stackName": f"s{index:03}"}
        )
        assert 200 <= status < 300, (status, body)
    rows = listed(pulumi, "-o", names.org, "-p", names.project)
    assert sorted(rows) == [names.stack(f"s{index:03}") for index in range(count)]
