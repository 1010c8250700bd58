"""The metadata seam: what every metadata backend (SQLite, PostgreSQL) must provide.

A backend gives transactions; the queries themselves are written once, in portable SQL,
in ``procella.metadata.queries``, and run on the backend's ``Connection``. Every rule that
must hold across replicas (one running update per stack, lease checks, sequence numbers)
is decided inside one of these transactions, against rows locked with ``FOR UPDATE`` on
PostgreSQL or under SQLite's single writer, never in process memory.

Times are integers: milliseconds since the Unix epoch, from the database's clock, so that
replicas with skewed clocks still agree on whether a lease has expired.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from procella.lifecycle import Lifecycle

Row = tuple[Any, ...]

# The message of the NotFound a store raises when a write refers to a row another request
# deleted meanwhile (a foreign key violation), e.g. an update of a stack being deleted.
GONE = "it was deleted by another request meanwhile"


class UniqueViolation(Exception):
    """Raised by a ``Connection`` when an insert or update breaks a unique constraint.

    ``constraint`` names the index or constraint when the driver reports it.
    """

    def __init__(self, constraint: str = "") -> None:
        super().__init__(constraint)
        self.constraint = constraint


class Connection(Protocol):
    """One database session inside a transaction, as the portable queries see it.

    SQL uses ``?`` placeholders and tokens the backend rewrites: ``NOW_MS`` (the database
    clock in epoch milliseconds), and ``FOR UPDATE`` and ``FOR KEY SHARE`` (dropped where the
    whole database is locked by the transaction anyway).

    ``dialect`` ("sqlite" or "postgres") lets a hot-path query use one statement where the
    backend can run it; everything else is the same SQL on both.
    """

    dialect: str

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; return the number of rows it changed."""
        ...

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement for each parameter row."""
        ...

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        """Run a query and return its first row, or None."""
        ...

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run a query and return all its rows."""
        ...


class MetadataStore(Protocol):
    """A metadata backend. ``procella.metadata.open_metadata_store`` picks one by URL."""

    async def open(self) -> None:
        """Connect. Raises ``ConfigurationError`` when the database cannot be reached."""
        ...

    async def close(self) -> None: ...

    async def migrate(self) -> list[str]:
        """Apply pending migrations (safe when several replicas start at once).

        Returns the names of the migrations applied by this call.
        """
        ...

    async def ping(self) -> None:
        """Raise ``TransientStoreError`` unless the database answers."""
        ...

    def transaction(self) -> AbstractAsyncContextManager[Connection]:
        """A read-write transaction. It commits when the block exits normally."""
        ...

    def read(self) -> AbstractAsyncContextManager[Connection]:
        """A connection for reads only. Each statement sees committed data."""
        ...

    def single_write(self) -> AbstractAsyncContextManager[Connection]:
        """A connection for work whose writes are one statement on PostgreSQL.

        PostgreSQL runs it in autocommit (a statement is atomic by itself: no BEGIN and
        COMMIT round trips); SQLite runs it as a write transaction. For hot-path queries
        that branch on ``Connection.dialect`` to write in a single statement there.
        """
        ...

    def exclusive(self, name: str) -> AbstractAsyncContextManager[bool]:
        """Try to become the one holder of ``name`` in the whole deployment.

        Yields True to the holder and False to everyone else, without waiting. The hold
        ends when the block exits, or when the holder's process or connection dies.
        """
        ...


# Records returned by the queries ---------------------------------------------------


@dataclass(frozen=True)
class PrincipalRecord:
    user_id: str
    login: str
    site_admin: bool
    token_name: str
    roles: dict[str, str]  # org name -> role
    token_id: str = ""
    expires_at: int | None = None  # epoch ms; None: never
    last_used_at: int | None = None  # epoch ms, written at most once a minute
    team: tuple[str, str, str] | None = None  # a team token's team: (id, org, name)


@dataclass(frozen=True)
class StackRecord:
    id: str
    org_id: str
    org: str
    project: str
    name: str
    version: int
    active_update_id: str | None
    created_at: int
    last_update_at: int | None


@dataclass(frozen=True)
class UpdateRecord:
    id: str
    stack_id: str
    kind: str
    is_preview: bool
    status: str
    version: int | None
    created_by: str
    created_at: int
    started_at: int | None
    ended_at: int | None
    lease_hash: str | None
    lease_expires_at: int | None
    lease_live: bool  # lease_expires_at is later than the database clock at read time
    checkpoint_seq: int
    checkpoint_sha: str | None
    program: str
    config: str
    metadata: str
    resource_changes: str | None
    resource_count: int | None
    checkpoint_chain: int = 0  # chain_bytes of the update's latest checkpoint step
    journal_version: int = 0  # 1: the CLI sends journal entries instead of checkpoints
    journal_count: int = 0  # journal entries stored so far
    journal_last_at: int | None = None  # when the last journal batch was stored
    client_version: str = ""  # the CLI's version, from the start request's User-Agent

    @property
    def lifecycle(self) -> Lifecycle:
        """What ``procella.lifecycle`` decides its next step from."""
        return Lifecycle(
            self.id,
            self.status,
            self.is_preview,
            self.lease_live,
            self.checkpoint_seq,
            self.checkpoint_sha,
        )

    @property
    def frozen(self) -> bool:
        """No checkpoint or journal entry can be added any more: the update ended or its
        lease expired (an expired lease is never renewed), so its state is final."""
        return self.lifecycle.frozen


@dataclass(frozen=True)
class CheckpointRecord:
    """The state of one stack version after its step ``seq`` (``sha256`` and ``size`` are
    that text's). The text is a full text (``data`` inline, or the blob ``blob_key``) taken
    at step ``full_seq``, or else the text of version ``base_version``; then the version's
    deltas after that step, up to ``seq``, apply on top."""

    stack_id: str
    version: int
    update_id: str | None
    sha256: str
    size: int
    resource_count: int
    data: bytes | None  # inline full text, or None
    blob_key: str | None  # full text in the blob store, or None
    created_at: int
    seq: int = 0
    full_seq: int = 0
    base_version: int | None = None
    chain_bytes: int = 0  # delta bytes between the nearest full text and this state


# Rows as the services list them.


@dataclass(frozen=True)
class TokenRow:
    """A token as listed: never its secret, nor its hash."""

    id: str
    login: str
    name: str
    description: str
    created_at: int
    expires_at: int | None
    last_used_at: int | None
    revoked_at: int | None
    role: str | None  # in the org the listing is for


@dataclass(frozen=True)
class IssuerRow:
    id: str
    name: str
    url: str
    audiences: list[str]
    max_expiration_s: int
    policies: list[dict[str, Any]]  # as stored: Policy.to_json() of each
    policy_version: int
    created_at: int
    modified_at: int


@dataclass(frozen=True)
class StackSummaryRow:
    id: str
    org: str
    project: str
    name: str
    last_update_at: int | None
    resource_count: int


@dataclass(frozen=True)
class AuditEntry:
    id: int
    org: str | None
    at_ms: int
    action: str
    login: str
    token_name: str
    source_ip: str
    request_id: str
    target: str
    description: str


@dataclass(frozen=True)
class AuditFilter:
    """What ``page`` lists; None means any. Times are epoch milliseconds, inclusive."""

    org: str | None = None
    action: str | None = None
    login: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
