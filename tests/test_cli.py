"""The ``procella`` admin commands, against a real embedded deployment."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from procella import create_app
from procella.cli import main
from procella.settings import Settings


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"PROCELLA_DATA_DIR": str(tmp_path / "data"), "PROCELLA_LOG_LEVEL": "WARNING"}


def run(env: dict[str, str], *args: str) -> str:
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_migrate_applies_once(env: dict[str, str]) -> None:
    assert "0001_initial.sql" in run(env, "migrate")
    assert "up to date" in run(env, "migrate")


def test_token_create_mints_a_working_member_token(env: dict[str, str]) -> None:
    token = run(env, "token", "create", "--org", "acme", "--role", "member", "--user", "alice")
    token = token.strip().splitlines()[-1]
    assert token.startswith("pul-")

    async def whoami() -> dict[str, object]:
        settings = Settings(data_dir=env["PROCELLA_DATA_DIR"])
        async with create_app(settings).test_app() as app:
            client = app.test_client()
            response = await client.get("/api/user", headers={"Authorization": f"token {token}"})
            found: dict[str, object] = json.loads(await response.get_data())
            return found

    body = asyncio.run(whoami())
    assert body["githubLogin"] == "alice"
    assert [o["githubLogin"] for o in body["organizations"]] == ["acme"]  # type: ignore[attr-defined]


def test_token_create_rejects_an_invalid_org(env: dict[str, str]) -> None:
    result = CliRunner().invoke(
        main, ["token", "create", "--org", "a", "--role", "viewer"], env=env
    )
    assert result.exit_code != 0
    assert "invalid organization name" in result.output


def test_gc_once_runs_a_cycle(env: dict[str, str]) -> None:
    assert "GcReport(" in run(env, "gc", "--once")


def test_settings_hides_secrets(env: dict[str, str]) -> None:
    out = run({**env, "PROCELLA_ADMIN_TOKEN": "pul-secret"}, "settings")
    assert "PROCELLA_ADMIN_TOKEN=(set)" in out
    assert "pul-secret" not in out


def test_bad_settings_fail_with_the_variable_name(env: dict[str, str]) -> None:
    result = CliRunner().invoke(main, ["settings"], env={**env, "PROCELLA_WORKERS": "many"})
    assert result.exit_code != 0
    assert "PROCELLA_WORKERS" in result.output


def test_audit_prints_the_log_newest_first(env: dict[str, str]) -> None:
    run(env, "token", "create", "--org", "acme", "--role", "admin", "--user", "alice")
    run(env, "token", "create", "--org", "zeta", "--role", "viewer", "--user", "zed")
    lines = run(env, "audit").strip().splitlines()
    assert len(lines) == 2
    assert " token.create zeta/zed by procella from - [-]: created token 'cli' for zed" in lines[0]
    assert " token.create acme/alice by procella " in lines[1]
    [only] = run(env, "audit", "--org", "acme", "--json").strip().splitlines()
    entry = json.loads(only)
    assert (entry["org"], entry["action"], entry["target"]) == ("acme", "token.create", "alice")
    assert run(env, "audit", "--action", "stack.delete") == ""
    assert run(env, "audit", "--until", "2000-01-01") == ""
    assert len(run(env, "audit", "--since", "2000-01-01", "--limit", "1").splitlines()) == 1


def test_token_list_and_revoke(env: dict[str, str]) -> None:
    token = (
        run(
            env,
            "token",
            "create",
            "--org",
            "acme",
            "--user",
            "bo",
            "--name",
            "ci",
            "--description",
            "the pipeline",
            "--expires-in",
            "30d",
        )
        .strip()
        .splitlines()[-1]
    )
    [line] = run(env, "token", "list", "--user", "bo", "--json").strip().splitlines()
    listed = json.loads(line)
    assert (listed["login"], listed["name"], listed["description"]) == ("bo", "ci", "the pipeline")
    assert listed["revoked_at"] is None and listed["expires_at"] is not None
    assert token not in run(env, "token", "list")  # never the secret
    assert f"revoked {listed['id']}" in run(env, "token", "revoke", listed["id"])
    assert "revoked " in run(env, "token", "list", "--org", "acme")

    async def whoami() -> int:
        settings = Settings(data_dir=env["PROCELLA_DATA_DIR"])
        async with create_app(settings).test_app() as app:
            response = await app.test_client().get(
                "/api/user", headers={"Authorization": f"token {token}"}
            )
            return response.status_code

    assert asyncio.run(whoami()) == 401
    again = CliRunner().invoke(main, ["token", "revoke", listed["id"]], env=env)
    assert again.exit_code != 0 and "revoked already" in again.output
    bad = CliRunner().invoke(
        main, ["token", "create", "--org", "acme", "--expires-in", "soon"], env=env
    )
    assert bad.exit_code != 0 and "expected a positive number" in bad.output


def test_teams_from_the_command_line(env: dict[str, str]) -> None:
    run(env, "token", "create", "--org", "acme", "--role", "viewer", "--user", "vera")
    run(env, "token", "create", "--org", "acme", "--role", "viewer", "--user", "vic")
    assert "created team web" in run(
        env, "team", "create", "--org", "acme", "--team", "web", "--description", "ships it"
    )
    run(env, "team", "add-member", "--org", "acme", "--team", "web", "--user", "vera")
    run(env, "team", "add-member", "--org", "acme", "--team", "web", "--user", "vic")
    run(env, "team", "remove-member", "--org", "acme", "--team", "web", "--user", "vic")
    grant = ("--org", "acme", "--team", "web", "--project", "site")
    assert "may write site" in run(env, "team", "grant", *grant, "--permission", "write")
    run(env, "team", "grant", *grant, "--permission", "read")  # replaces it
    run(env, "team", "revoke-grant", *grant)
    run(
        env,
        "team",
        "grant",
        "--org",
        "acme",
        "--team",
        "web",
        "--project",
        "api",
        "--permission",
        "admin",
    )
    [line] = run(env, "team", "list", "--org", "acme", "--json").strip().splitlines()
    assert json.loads(line) == {
        "name": "web",
        "description": "ships it",
        "members": ["vera"],
        "grants": [{"project": "api", "stack": None, "permission": "admin"}],
    }
    shown = run(env, "team", "list", "--org", "acme")
    assert shown.startswith("web: members vera; grants admin on api/*: ships it")

    token = run(env, "token", "create", "--org", "acme", "--team", "web", "--name", "ci")
    token = token.strip().splitlines()[-1]

    async def whoami() -> dict[str, object]:
        settings = Settings(data_dir=env["PROCELLA_DATA_DIR"])
        async with create_app(settings).test_app() as app:
            response = await app.test_client().get(
                "/api/user", headers={"Authorization": f"token {token}"}
            )
            found: dict[str, object] = json.loads(await response.get_data())
            return found

    assert asyncio.run(whoami())["tokenInfo"] == {
        "name": "ci",
        "organization": "acme",
        "team": "web",
    }
    assert "team:acme/web" in run(env, "token", "list")
    actions = [json.loads(x)["action"] for x in run(env, "audit", "--json").splitlines()]
    assert actions[:3] == ["token.create", "team.permission.add", "team.permission.remove"]

    for args, message in (
        (("team", "create", "--org", "acme", "--team", "web"), "already exists"),
        (("team", "create", "--org", "nowhere", "--team", "web"), "not found"),
        (
            ("team", "add-member", "--org", "acme", "--team", "web", "--user", "nobody"),
            "not a member",
        ),
        # A stack grant needs the stack (it goes with it); a project grant does not.
        (("team", "grant", *grant, "--stack", "dev", "--permission", "read"), "not found"),
        (("token", "create", "--org", "acme", "--team", "web", "--role", "admin"), "no --role"),
        (("token", "create", "--org", "acme", "--team", "nope"), "not found"),
        (("token", "create", "--org", "acme", "--user", "team:acme/web"), "name team tokens"),
    ):
        result = CliRunner().invoke(main, list(args), env=env)
        assert result.exit_code != 0 and message in result.output, (args, result.output)
    assert "deleted team web" in run(env, "team", "delete", "--org", "acme", "--team", "web")
    assert run(env, "team", "list", "--org", "acme") == ""
