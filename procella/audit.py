"""The audit log: every state-changing action, recorded in the transaction that makes it,
so an action is never without its entry nor an entry without its action.

Who acted is the principal's login and token name, or ``procella`` for what the server does
itself (the garbage collector, its command line); from where and in which request come from
the request being served (``procella.logs``). Org admins read their org's entries through
``GET /api/orgs/<org>/auditlogs/v2`` (what ``pulumi org audit-log`` calls), the operator
through ``procella audit``; ``PROCELLA_AUDIT_RETENTION_DAYS`` bounds how long they stay.
"""

from __future__ import annotations

from dataclasses import dataclass

from procella import logs
from procella.auth.models import Principal, Role
from procella.metadata.base import AuditEntry, AuditFilter, Connection, MetadataStore
from procella.metadata.queries import audit as audit_q

STACK_CREATE = "stack.create"
STACK_DELETE = "stack.delete"
STACK_RENAME = "stack.rename"
STACK_IMPORT = "stack.import"
STACK_TAGS = "stack.tags.update"
UPDATE_START = "update.start"
UPDATE_COMPLETE = "update.complete"
UPDATE_CANCEL = "update.cancel"
UPDATE_EXPIRE = "update.expire"
TOKEN_CREATE = "token.create"
TOKEN_REVOKE = "token.revoke"
SECRETS_DECRYPT = "secrets.decrypt"
TEAM_CREATE = "team.create"
TEAM_UPDATE = "team.update"
TEAM_DELETE = "team.delete"
TEAM_MEMBER_ADD = "team.member.add"
TEAM_MEMBER_REMOVE = "team.member.remove"
TEAM_GRANT_ADD = "team.permission.add"
TEAM_GRANT_REMOVE = "team.permission.remove"

# The login of the actions the server takes on its own.
SERVER = "procella"


OIDC_ISSUER_CREATE = "oidc.issuer.create"
OIDC_ISSUER_DELETE = "oidc.issuer.delete"
OIDC_POLICY_UPDATE = "oidc.policy.update"


@dataclass(frozen=True)
class OidcSubject:
    """The caller of an OIDC token exchange: no Procella token yet, an issuer's subject."""

    issuer: str  # the issuer's registered name
    subject: str  # the ID token's ``sub``


# Who acted: a principal (an API token), the login that started an update (for a call
# made with that update's lease), an OIDC subject, or None: the server itself.
Actor = Principal | OidcSubject | str | None

# The token name of calls made with an update's lease.
UPDATE_LEASE = "update lease"


def who(actor: Actor) -> audit_q.Who:
    context = logs.current()
    if isinstance(actor, Principal):
        login, token_name = actor.login, actor.token_name
    elif isinstance(actor, OidcSubject):
        login, token_name = f"oidc:{actor.issuer}", actor.subject
    else:
        login, token_name = (SERVER, "") if actor is None else (actor, UPDATE_LEASE)
    return audit_q.Who(
        login,
        token_name,
        context.client_addr if context is not None else "",
        context.request_id if context is not None else "",
    )


async def record(
    conn: Connection,
    org_id: str | None,
    actor: Actor,
    action: str,
    target: str,
    description: str,
) -> None:
    await audit_q.insert(conn, org_id, who(actor), action, target, description)


async def record_on_stack(
    conn: Connection, stack_id: str, actor: Actor, action: str, description: str
) -> None:
    await audit_q.insert_for_stack(conn, stack_id, who(actor), action, description)


async def entries(
    meta: MetadataStore,
    principal: Principal,
    f: AuditFilter,
    before_id: int | None,
    limit: int,
) -> list[AuditEntry]:
    """A page of an org's audit log, for its admins."""
    assert f.org is not None
    principal.require(f.org, Role.ADMIN)
    async with meta.read() as conn:
        return await audit_q.page(conn, f, before_id, limit)
