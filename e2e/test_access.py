"""Roles: a viewer reads but cannot write; a member of another org does not see the stack.

Tokens come from `procella token create --org ORG --role ROLE` run on the server's data.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from names import Names

from procella_testing.cluster import Cluster
from procella_testing.procella_server import AUTH_CACHE_SECONDS, ProcellaServer
from procella_testing.processes import Result, expect_fail, poll
from procella_testing.pulumi_cli import PulumiCLI, Stack, make_project, resources

# The subject is who may read and write, not how the CLI sends the state: one mode (conftest).
pytestmark = pytest.mark.any_mode


def expect_denied(result: Result, *, hidden: bool = False) -> None:
    """Refused for lack of rights: 403, or, for a stack the caller may not even see, the
    CLI's 404 message. Anything else (a 500, a bad request) is a failure for another reason."""
    expect_fail(result)
    output = result.output.lower()
    refused = "[403]" in output or (hidden and "no stack named" in output)
    assert refused, f"expected a 403{' or 404' if hidden else ''}:\n{result.describe()}"


def test_viewer_reads_but_cannot_write(
    pulumi: PulumiCLI,
    server: ProcellaServer,
    names: Names,
    project_dir: Path,
    tmp_path: Path,
    other_cli: Callable[[str], PulumiCLI],
) -> None:
    owner = Stack(pulumi, names.stack(), project_dir).init()
    owner.up()
    before = owner.export()
    history_before = owner.ok("stack", "history", "--json").json()

    viewer = other_cli(server.create_token(names.org, "viewer"))
    viewer_stack = Stack(viewer, owner.name, make_project("things", names.project, tmp_path / "v"))
    rows = viewer.json(
        "--fully-qualify-stack-names", "stack", "ls", "--json", "-a", "-o", names.org
    )
    assert [row["name"] for row in rows] == [owner.name]
    assert resources(viewer_stack.export()) == resources(before)

    expect_denied(viewer_stack.run("up", "--yes", "--skip-preview"))
    expect_denied(viewer_stack.run("config", "set", "--secret", "token", "nope"))
    expect_denied(viewer_stack.run("stack", "tag", "set", "owner", "viewer"))
    expect_denied(viewer_stack.run("stack", "rm", "--yes", "--force"))

    # Nothing changed on the server.
    assert resources(owner.export()) == resources(before)
    assert owner.ok("stack", "history", "--json").json() == history_before
    assert "owner" not in owner.ok("stack", "tag", "ls", "--json").json()

    # A member of the org may write (so the failures above are about the role).
    member = other_cli(server.create_token(names.org, "member"))
    member_stack = Stack(member, owner.name, make_project("things", names.project, tmp_path / "m"))
    assert member_stack.up() == {"same": 8}


def test_member_of_another_org_cannot_see_the_stack(
    pulumi: PulumiCLI,
    server: ProcellaServer,
    names: Names,
    project_dir: Path,
    tmp_path: Path,
    other_cli: Callable[[str], PulumiCLI],
) -> None:
    owner = Stack(pulumi, names.stack(), project_dir).init()
    owner.ok("config", "set", "--secret", "token", "for-members-only")
    other_org = f"{names.org}-x"
    Stack(pulumi, f"{other_org}/{names.project}/dev", project_dir).init()  # creates the org

    outsider = other_cli(server.create_token(other_org, "member"))
    outsider_dir = make_project("things", names.project, tmp_path / "o")
    listing = outsider.run(
        "--fully-qualify-stack-names", "stack", "ls", "--json", "-a", "-o", names.org
    )
    # Listing another org shows nothing (or is refused); it never fails otherwise.
    if listing.rc == 0:
        assert listing.json() == [], listing.describe()
    else:
        expect_denied(listing)
    expect_denied(
        outsider.run("stack", "export", "--stack", owner.name, cwd=outsider_dir), hidden=True
    )
    expect_denied(outsider.run("stack", "select", owner.name, cwd=outsider_dir), hidden=True)
    expect_denied(
        outsider.run("up", "--yes", "--skip-preview", "--stack", owner.name, cwd=outsider_dir),
        hidden=True,
    )
    # Its own org's stacks are visible to it.
    own = outsider.json(
        "--fully-qualify-stack-names", "stack", "ls", "--json", "-a", "-o", other_org
    )
    assert [row["name"] for row in own] == [f"{other_org}/{names.project}/dev"]


def test_a_revoked_token_is_refused(
    server: ProcellaServer | Cluster,
    names: Names,
    project_dir: Path,
    other_cli: Callable[[str], PulumiCLI],
) -> None:
    # `procella token list` finds the token's id; `procella token revoke` ends it. Every
    # replica refuses it within PROCELLA_AUTH_CACHE_SECONDS (set by the harness).
    login = f"ci-{names.org}"
    cli = other_cli(server.create_token(names.org, "member", login))
    cli.ok("stack", "ls", "-a")  # `whoami` may answer from the CLI's own cache
    listed = server.admin_command("token", "list", "--user", login, "--json")
    [token_id] = [json.loads(line)["id"] for line in listed.stdout.splitlines()]
    server.admin_command("token", "revoke", token_id)
    # Every replica's cached principal was read before the revocation, so it is gone by then.
    all_refuse_at = time.monotonic() + AUTH_CACHE_SECONDS + 1

    last: list[Result] = []

    def refused() -> bool:
        last[:] = [cli.run("stack", "ls", "-a")]
        # A 401 is how the CLI learns it is logged out; depending on the call that met it,
        # it says so or shows the status.
        output = last[0].output
        return last[0].rc != 0 and ("requires logging in" in output or "[401]" in output)

    try:
        # 5 s of cache, and CLI runs that take seconds each on a loaded machine.
        poll(refused, timeout=30, message="every replica refuses the revoked token")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}:\n{last[0].describe()}") from None
    # One replica refusing is not all of them: after the cache time, every one must.
    time.sleep(max(0.0, all_refuse_at - time.monotonic()))
    stack = Stack(cli, names.stack(), project_dir)
    expect_fail(stack.run("stack", "init"))
    expect_fail(stack.run("stack", "init"))  # twice: behind Caddy, likely another replica
