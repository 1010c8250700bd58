"""The ``procella`` command: serve, migrate, gc, token, team, audit, settings.

Every command reads the same ``PROCELLA_*`` settings as the server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import click

from procella.auth.models import PERMISSIONS, Role, permission_name
from procella.auth.service import iso
from procella.auth.teams import Target
from procella.errors import ConfigurationError, ProcellaError
from procella.metadata.base import AuditEntry, AuditFilter
from procella.settings import Settings, markdown_table

if TYPE_CHECKING:
    from procella.services import Services

T = TypeVar("T")


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings.from_env(**{k: v for k, v in overrides.items() if v is not None})
    except ConfigurationError as exc:
        raise click.ClickException(exc.message) from None


def _run(settings: Settings, work: Callable[[Services], Awaitable[T]]) -> T:
    """Open the stores (no admin bootstrap), run ``work(services)``, close them."""
    from procella.app import close_services, open_services

    async def main() -> T:
        try:
            services = await open_services(settings, bootstrap=False)
        except ConfigurationError as exc:
            raise click.ClickException(exc.message) from None
        try:
            return await work(services)
        finally:
            await close_services(services)

    return asyncio.run(main())


@click.group()
def main() -> None:
    """Procella, a self-hosted backend for the Pulumi CLI."""


@main.command()
@click.option("--listen", help="Address to listen on (PROCELLA_LISTEN_ADDR), e.g. :9090.")
@click.option("--workers", type=int, help="Worker processes (PROCELLA_WORKERS).")
def serve(listen: str | None, workers: int | None) -> None:
    """Serve the Pulumi service API (with hypercorn)."""
    from procella.serving import serve as run_server

    settings = _settings(listen_addr=listen, workers=workers)
    # Worker processes rebuild the settings from the environment: pass the overrides on.
    if listen is not None:
        os.environ["PROCELLA_LISTEN_ADDR"] = listen
    sys.exit(run_server(settings))


@main.command()
def migrate() -> None:
    """Apply pending schema migrations and exit."""

    async def work(services: Services) -> list[str]:
        return await services.meta.migrate()

    applied = _run(_settings(migrate_on_start=False), work)
    click.echo("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))


@main.command()
@click.option("--once", is_flag=True, required=True, help="Run one cycle now and exit.")
def gc(once: bool) -> None:
    """Run one garbage-collection cycle (as the background worker does)."""
    from procella.workers.gc import run_gc_once

    settings = _settings()

    async def work(services: Services) -> object:
        return await run_gc_once(services.meta, services.blobs, settings)

    click.echo(str(_run(settings, work)))


@main.group()
def token() -> None:
    """Manage API tokens."""


@token.command("create")
@click.option("--org", required=True, help="Organization the token's user (or team) belongs to.")
@click.option(
    "--role",
    type=click.Choice(["viewer", "member", "admin"]),
    help="The user's role in the organization (default: member).",
)
@click.option("--user", "login", help="User login (default: <org>-<role>).")
@click.option("--team", help="Mint a team token instead: it acts as this team of --org.")
@click.option("--name", help="Token name, shown by `pulumi whoami -v` (default: cli).")
@click.option("--description", default="", help="What the token is for.")
@click.option(
    "--expires-in",
    "expires_in",
    help="Lifetime, e.g. 90d, 12h, 30m (default: no expiry).",
)
def token_create(
    org: str,
    role: str | None,
    login: str | None,
    team: str | None,
    name: str | None,
    description: str,
    expires_in: str | None,
) -> None:
    """Mint an API token and print it (it is stored only as a hash)."""
    lifetime = None if expires_in is None else _duration_seconds(expires_in)
    if team is not None and (role is not None or login is not None):
        raise click.UsageError("a team token has its team's grants: no --role nor --user")
    role = role or "member"

    async def work(services: Services) -> str:
        if team is not None:
            issued = await services.auth.create_team_token(
                org, team, name or "cli", expires_in=lifetime, description=description
            )
        else:
            issued = await services.auth.create_token(
                org,
                Role.parse(role),
                login or f"{org}-{role}",
                name or "cli",
                description=description,
                expires_in=lifetime,
            )
        return issued.token

    try:
        click.echo(_run(_settings(), work))
    except ProcellaError as exc:  # e.g. an invalid organization name
        raise click.ClickException(exc.message) from None


@token.command("list")
@click.option("--org", help="Only the tokens of this organization's members.")
@click.option("--user", "login", help="Only this user's tokens.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def token_list(org: str | None, login: str | None, as_json: bool) -> None:
    """List API tokens (never their secrets): id, user, name, and when each was created,
    last used, expires or was revoked."""

    async def work(services: Services) -> list[Any]:
        return await services.auth.list_tokens(None, org, login)

    for row in _run(_settings(), work):
        fields = dataclasses.asdict(row)
        if as_json:
            click.echo(json.dumps(fields))
            continue
        times = {k: _iso_ms(fields[k]) for k in ("created_at", "last_used_at", "expires_at")}
        state = "revoked " + _iso_ms(row.revoked_at) if row.revoked_at else "live"
        click.echo(
            f"{row.id} {row.login} {row.name!r} created {times['created_at']} "
            f"last used {times['last_used_at']} expires {times['expires_at']} {state}"
            + (f": {row.description}" if row.description else "")
        )


@token.command("revoke")
@click.argument("token_id")
def token_revoke(token_id: str) -> None:
    """Revoke a token by its id (see `procella token list`)."""

    async def work(services: Services) -> None:
        await services.auth.revoke_token(None, None, token_id)

    try:
        _run(_settings(), work)
    except ProcellaError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"revoked {token_id}")


def _duration_seconds(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = text[:-1], text[-1:]
    if unit not in units or not number.isdigit() or int(number) == 0:
        raise click.BadParameter(f"expected a positive number and s, m, h or d: {text!r}")
    return int(number) * units[unit]


def _iso_ms(epoch_ms: int | None) -> str:
    return "-" if epoch_ms is None else iso(epoch_ms)


@main.group()
def team() -> None:
    """Manage an organization's teams: members and their grants on projects and stacks."""


_ORG = click.option("--org", required=True, help="The team's organization.")
_TEAM = click.option("--team", "name", required=True, help="The team's name.")


def _team_work(work: Callable[[Services], Awaitable[T]]) -> T:
    """Run a team command's work; a refusal (no such team, bad name) is a clean error."""
    try:
        return _run(_settings(), work)
    except ProcellaError as exc:
        raise click.ClickException(exc.message) from None


@team.command("create")
@_ORG
@_TEAM
@click.option("--description", default="", help="What the team is for.")
def team_create(org: str, name: str, description: str) -> None:
    """Create a team (the organization must exist)."""
    _team_work(lambda s: s.teams.create(None, org, name, description))
    click.echo(f"created team {name} in {org}")


@team.command("list")
@_ORG
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def team_list(org: str, as_json: bool) -> None:
    """List the organization's teams with their members and grants."""
    for view in _team_work(lambda s: s.teams.list_teams(None, org)):
        grants = [
            {
                "project": g.project,
                "stack": g.stack,
                "permission": permission_name(Role.parse(g.role)),
            }
            for g in view.grants
        ]
        if as_json:
            fields = {"name": view.team.name, "description": view.team.description}
            click.echo(json.dumps({**fields, "members": view.members, "grants": grants}))
            continue
        shown = ", ".join(
            f"{g['permission']} on {g['project']}" + (f"/{g['stack']}" if g["stack"] else "/*")
            for g in grants
        )
        click.echo(
            f"{view.team.name}: members {', '.join(view.members) or '-'}; grants {shown or '-'}"
            + (f": {view.team.description}" if view.team.description else "")
        )


@team.command("delete")
@_ORG
@_TEAM
def team_delete(org: str, name: str) -> None:
    """Delete a team: its members lose its grants, its tokens stop working."""
    _team_work(lambda s: s.teams.delete(None, org, name))
    click.echo(f"deleted team {name}")


@team.command("add-member")
@_ORG
@_TEAM
@click.option("--user", "login", required=True, help="A user with a role in the organization.")
def team_add_member(org: str, name: str, login: str) -> None:
    """Add a member of the organization to the team."""
    _team_work(lambda s: s.teams.add_member(None, org, name, login))
    click.echo(f"added {login} to team {name}")


@team.command("remove-member")
@_ORG
@_TEAM
@click.option("--user", "login", required=True)
def team_remove_member(org: str, name: str, login: str) -> None:
    """Remove a member from the team."""
    _team_work(lambda s: s.teams.remove_member(None, org, name, login))
    click.echo(f"removed {login} from team {name}")


_PROJECT = click.option("--project", required=True, help="The project granted.")
_STACK = click.option("--stack", help="Only this stack of the project (default: all of them).")


@team.command("grant")
@_ORG
@_TEAM
@_PROJECT
@_STACK
@click.option("--permission", type=click.Choice(list(PERMISSIONS)), required=True)
def team_grant(org: str, name: str, project: str, stack: str | None, permission: str) -> None:
    """Grant the team read, write or admin on a stack, or on every stack of a project
    (including stacks created later); replaces its grant there."""
    target = Target(project, stack)
    _team_work(lambda s: s.teams.grant(None, org, name, target, PERMISSIONS[permission]))
    click.echo(f"team {name} may {permission} {target}")


@team.command("revoke-grant")
@_ORG
@_TEAM
@_PROJECT
@_STACK
def team_revoke_grant(org: str, name: str, project: str, stack: str | None) -> None:
    """Remove the team's grant on a stack or a project."""
    target = Target(project, stack)
    _team_work(lambda s: s.teams.revoke_grant(None, org, name, target))
    click.echo(f"team {name} lost its grant on {target}")


@main.command("audit")
@click.option("--org", help="Only this organization's entries (default: all, and the server's).")
@click.option("--action", help="Only this action, e.g. stack.delete.")
@click.option("--user", "login", help="Only this user's actions.")
@click.option("--since", type=click.DateTime(), help="Only entries at or after this time (UTC).")
@click.option("--until", type=click.DateTime(), help="Only entries at or before this time (UTC).")
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def audit_log(
    org: str | None,
    action: str | None,
    login: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    as_json: bool,
) -> None:
    """Print the audit log, newest first: who changed what, when, from where."""
    from procella.metadata.queries import audit as audit_q

    f = AuditFilter(org, action, login, _epoch_ms(since), _epoch_ms(until))

    async def work(services: Services) -> list[AuditEntry]:
        async with services.meta.read() as conn:
            return await audit_q.page(conn, f, None, limit)

    for entry in _run(_settings(), work):
        at = _iso_ms(entry.at_ms)
        if as_json:
            click.echo(json.dumps({**dataclasses.asdict(entry), "at": at}))
        else:
            where = f"{entry.org}/{entry.target}" if entry.org else entry.target
            token = f" ({entry.token_name})" if entry.token_name else ""
            click.echo(
                f"{at} {entry.action} {where} by {entry.login}{token} from "
                f"{entry.source_ip or '-'} [{entry.request_id or '-'}]: {entry.description}"
            )


def _epoch_ms(when: datetime | None) -> int | None:
    return None if when is None else int(when.replace(tzinfo=UTC).timestamp() * 1000)


@main.command()
@click.option("--markdown", is_flag=True, help="Print the README's settings table.")
def settings(markdown: bool) -> None:
    """List every setting and its current value (secrets hidden)."""
    if markdown:
        click.echo(markdown_table())
        return
    from procella.settings import SETTINGS

    current = _settings()
    for s in SETTINGS:
        value = getattr(current, s.field)
        shown = "(set)" if s.secret and value else value
        click.echo(f"{s.env}={shown}")
