"""OIDC issuers an org trusts, with their policies (procella/auth/oidc.py)."""

from __future__ import annotations

import json
from typing import Any

from procella.metadata.base import Connection, IssuerRow
from procella.metadata.queries import new_id

_COLUMNS = (
    "i.id, i.name, i.url, i.audiences, i.max_expiration_s, i.policies, i.policy_version, "
    "i.created_at, i.modified_at"
)


def _row(row: Any) -> IssuerRow:
    id_, name, url, audiences, max_s, policies, version, created, modified = row
    return IssuerRow(
        str(id_),
        str(name),
        str(url),
        json.loads(audiences),
        int(max_s),
        json.loads(policies),
        int(version),
        int(created),
        int(modified),
    )


async def insert(
    conn: Connection, org_id: str, name: str, url: str, audiences: list[str], max_s: int
) -> str:
    """A new issuer, without policies; its id. A name or URL taken is a UniqueViolation."""
    issuer_id = new_id()
    await conn.execute(
        "INSERT INTO oidc_issuers (id, org_id, name, url, audiences, max_expiration_s, "
        "created_at, modified_at) VALUES (?, ?, ?, ?, ?, ?, NOW_MS, NOW_MS)",
        (issuer_id, org_id, name, url, json.dumps(audiences), max_s),
    )
    return issuer_id


async def list_for_org(conn: Connection, org: str) -> list[IssuerRow]:
    rows = await conn.fetchall(
        f"SELECT {_COLUMNS} FROM oidc_issuers i JOIN orgs o ON o.id = i.org_id "
        "WHERE o.name = ? ORDER BY i.name",
        (org,),
    )
    return [_row(row) for row in rows]


async def get(conn: Connection, org: str, issuer_id: str) -> IssuerRow | None:
    row = await conn.fetchone(
        f"SELECT {_COLUMNS} FROM oidc_issuers i JOIN orgs o ON o.id = i.org_id "
        "WHERE o.name = ? AND i.id = ?",
        (org, issuer_id),
    )
    return None if row is None else _row(row)


async def by_url(conn: Connection, org: str, url: str) -> IssuerRow | None:
    row = await conn.fetchone(
        f"SELECT {_COLUMNS} FROM oidc_issuers i JOIN orgs o ON o.id = i.org_id "
        "WHERE o.name = ? AND i.url = ?",
        (org, url),
    )
    return None if row is None else _row(row)


async def set_policies(
    conn: Connection, issuer_id: str, policies: list[dict[str, Any]], expected_version: int | None
) -> int | None:
    """Replace the policies; the new version, or None if the issuer is gone or its
    version is no longer ``expected_version`` (a concurrent edit)."""
    sql = (
        "UPDATE oidc_issuers SET policies = ?, policy_version = policy_version + 1, "
        "modified_at = NOW_MS WHERE id = ?"
    )
    params: list[object] = [json.dumps(policies), issuer_id]
    if expected_version is not None:
        sql += " AND policy_version = ?"
        params.append(expected_version)
    if await conn.execute(sql, params) != 1:
        return None
    row = await conn.fetchone("SELECT policy_version FROM oidc_issuers WHERE id = ?", (issuer_id,))
    return None if row is None else int(row[0])


async def delete(conn: Connection, issuer_id: str) -> int:
    """Delete the issuer and revoke the live tokens it minted; how many were revoked."""
    revoked = await conn.execute(
        "UPDATE api_tokens SET revoked_at = NOW_MS WHERE oidc_issuer_id = ? AND revoked_at IS NULL",
        (issuer_id,),
    )
    await conn.execute("DELETE FROM oidc_issuers WHERE id = ?", (issuer_id,))
    return revoked
