"""Every setting Procella reads, declared once.

Each setting is an environment variable ``PROCELLA_<NAME>``. Any of them may instead be
read from a file named by ``PROCELLA_<NAME>_FILE`` (for container secrets); the file's
content, stripped of surrounding whitespace, is the value. Setting both is an error.

The table in the README is generated from ``SETTINGS`` (``procella settings --markdown``)
and a test keeps the two in step, as it does for every deployment bundle.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Any

from procella.errors import ConfigurationError

ENV_PREFIX = "PROCELLA_"
MiB = 1024 * 1024


@dataclass(frozen=True)
class Setting:
    """One environment variable: its field on ``Settings``, default and meaning."""

    field: str
    default: Any
    help: str
    secret: bool = False

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.field.upper()


def _setting(default: Any, help: str, *, secret: bool = False) -> Any:
    """A ``Settings`` field: its default and the help shown in the README table."""
    return dataclasses.field(default=default, metadata={"help": help, "secret": secret})


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _parser(default: Any) -> Callable[[str], Any]:
    if isinstance(default, bool):
        return _parse_bool
    if isinstance(default, int):
        return int
    if isinstance(default, float):
        return float
    return str


@dataclass(frozen=True)
class Settings:
    """The resolved configuration of one replica. Build it with ``from_env`` or directly."""

    listen_addr: str = _setting(
        ":9090",
        "Address to listen on, `host:port` or `:port` (all interfaces).",
    )
    metrics_listen_addr: str = _setting(
        "",
        "Address of a separate listener for `GET /metrics` (`host:port` or `:port`), so it "
        "need not be public; the main listener then answers 404 there. Empty: /metrics is on "
        "the main listener.",
    )
    workers: int = _setting(1, "Number of server worker processes (`procella serve` only).")
    data_dir: str = _setting(
        "./procella-data",
        "Folder for the embedded default: SQLite file, blobs, generated key.",
    )
    database_url: str = _setting(
        "",
        "Metadata store: `sqlite:///path/file.db` or `postgresql://user:pass@host/db`. "
        "Empty means `sqlite:///<data_dir>/procella.db`.",
        secret=True,
    )
    database_pool_min_size: int = _setting(1, "PostgreSQL: connections kept open per replica.")
    database_pool_max_size: int = _setting(10, "PostgreSQL: most connections per replica.")
    database_connect_timeout: float = _setting(10.0, "Seconds to wait for a database connection.")
    database_statement_timeout: float = _setting(
        30.0,
        "PostgreSQL: seconds before a statement is cancelled.",
    )
    migrate_on_start: bool = _setting(True, "Apply pending schema migrations at start-up.")
    blob_backend: str = _setting(
        "local",
        "Checkpoint blob store: `local` (files under blob_local_path) or `s3`.",
    )
    blob_local_path: str = _setting("", "Local blob folder. Empty means `<data_dir>/blobs`.")
    blob_s3_bucket: str = _setting("", "S3 bucket for checkpoint blobs (must exist before start).")
    blob_s3_endpoint: str = _setting(
        "",
        "S3 endpoint URL for MinIO and other S3-compatible servers.",
    )
    blob_s3_region: str = _setting("us-east-1", "S3 region.")
    blob_s3_prefix: str = _setting("", "Key prefix inside the bucket, e.g. `procella/`.")
    checkpoint_inline_max_bytes: int = _setting(
        1 * MiB,
        "Checkpoints up to this size are kept in the database; larger ones go to the blob store.",
    )
    checkpoint_cache_bytes: int = _setting(
        64 * MiB,
        "Per-replica cache of checkpoint texts (the newest of each stack: delta bases).",
    )
    encryption_key: str = _setting(
        "",
        "Master key for stack secrets, 64 hex characters. Required with PostgreSQL or S3; "
        "the embedded default generates one in data_dir when it is empty.",
        secret=True,
    )
    secrets_stable_across_updates: bool = _setting(
        True,
        "During updates a plaintext encrypts to one ciphertext for the stack's whole history, "
        "so an unchanged secret (such as the Python SDK's dynamic provider, sent again at "
        "every update) leaves the state unchanged and a small change stays small. Off, "
        "ciphertexts repeat only within one update: nothing shows that a secret kept its "
        "value across updates, but every resource holding a secret changes at every update.",
    )
    admin_token: str = _setting(
        "",
        "Token of the built-in site administrator. "
        "Empty: one is generated and printed at the first start.",
        secret=True,
    )
    default_org: str = _setting(
        "organization",
        "Organization of the site administrator and default for new stacks.",
    )
    delta_checkpoints: bool = _setting(
        False,
        "Advertise `delta-checkpoint-uploads-v2` to CLIs that do not journal (they then send "
        "deltas: faster, but a crash loses the pending operations of fewer than 10 steps in "
        "flight, a CLI defect).",
    )
    delta_checkpoint_cutoff_bytes: int = _setting(
        512 * 1024,
        "Checkpoints shorter than this are sent whole even when deltas are on.",
    )
    journaling: bool = _setting(
        True,
        "Answer `journalVersion: 1` to CLIs that ask: they then send journal entries, not "
        "checkpoints.",
    )
    journal_batch_max_bytes: int = _setting(
        16 * MiB,
        "Largest journal-entry batch after decompression; larger ones get 413, and the CLI "
        "splits them.",
    )
    max_request_bytes: int = _setting(
        64 * MiB,
        "Largest request body accepted, as sent (compressed).",
    )
    max_inflated_bytes: int = _setting(256 * MiB, "Largest request body after gzip decompression.")
    request_timeout: float = _setting(
        300.0,
        "Seconds allowed to receive a request body or produce a response.",
    )
    lease_max_seconds: int = _setting(
        300,
        "Longest update lease a CLI may ask for; at least 300 (the CLI assumes 5 minutes).",
    )
    gc_interval_seconds: float = _setting(
        60.0,
        "Seconds between garbage-collection attempts on each replica.",
    )
    gc_lease_grace_seconds: float = _setting(
        30.0,
        "An update whose lease expired this long ago is cancelled.",
    )
    gc_unstarted_update_seconds: float = _setting(
        3600.0,
        "An update created but never started is expired after this.",
    )
    gc_blob_grace_seconds: float = _setting(
        3600.0,
        "Unreferenced blobs younger than this are never collected.",
    )
    event_retention_days: float = _setting(
        90.0,
        "Engine events of updates that ended longer ago are deleted, a stack's together once "
        "its oldest are a tenth of this (at most a day) past it. 0 keeps them.",
    )
    auth_cache_seconds: float = _setting(
        5.0,
        "How long a replica reuses what it read about an API token (its user and roles): a "
        "role change takes effect on every replica within this. 0 reads it at every request.",
    )
    audit_retention_days: float = _setting(
        365.0,
        "Audit log entries older than this are deleted. 0 keeps them.",
    )
    oidc_allow_private_issuers: bool = _setting(
        False,
        "Let OIDC token exchange reach issuers at private, loopback or link-local addresses "
        "and over plain http (for an issuer inside your network, and for tests). Off, "
        "discovery and JWKS are fetched only over https from public addresses.",
    )
    oidc_jwks_cache_seconds: float = _setting(
        300.0,
        "How long a replica reuses an OIDC issuer's discovery document and keys. A token "
        "signed with a key it does not know makes it fetch them again (at most once a second); "
        "a key the issuer retires is refused by every replica within this time.",
    )
    oidc_max_expiration_seconds: int = _setting(
        86400,
        "The longest an access token minted by OIDC token exchange may live, whatever an "
        "issuer's registration allows.",
    )
    trusted_proxies: str = _setting(
        "",
        "Comma-separated addresses or networks (CIDR) of the proxies in front of the server: "
        "from them, `X-Forwarded-For` names the client the audit log records. Empty: the "
        "peer address is the client.",
    )
    console_session_key: str = _setting(
        "",
        "Key of the web console's session cookies (they are encrypted and authenticated with "
        "it), 64 hex characters, the same on every replica. Empty: derived from the "
        "encryption key. Changing it logs everyone out of the console.",
        secret=True,
    )
    console_session_hours: float = _setting(
        12.0,
        "How long a console login lasts (the API token it was made with must stay valid too).",
    )
    shutdown_timeout_seconds: float = _setting(
        30.0,
        "On SIGTERM, how long in-flight requests may take to finish.",
    )
    log_level: str = _setting("INFO", "Python log level: DEBUG, INFO, WARNING or ERROR.")
    log_format: str = _setting(
        "text",
        "Log lines of `procella serve`: `text` (one line each, with the request id) or `json` "
        "(one JSON object each).",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read every ``PROCELLA_*`` variable (and ``*_FILE`` variant); ``overrides`` win."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for setting in SETTINGS:
            raw = _read_raw(env, setting)
            if raw is None:
                continue
            try:
                values[setting.field] = _parser(setting.default)(raw)
            except ValueError as exc:
                raise ConfigurationError(f"{setting.env}: {exc}") from None
        values.update(overrides)
        settings = cls(**values)
        settings.validate()
        return settings

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    # Derived values -----------------------------------------------------------------

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return "sqlite:///" + str(Path(self.data_dir).resolve() / "procella.db")

    @property
    def resolved_blob_local_path(self) -> Path:
        return Path(self.blob_local_path or Path(self.data_dir) / "blobs").resolve()

    @property
    def uses_postgres(self) -> bool:
        return self.resolved_database_url.startswith(("postgresql://", "postgres://"))

    @property
    def is_cluster(self) -> bool:
        """True when state is shared with other replicas: then nothing may be generated locally."""
        return self.uses_postgres or self.blob_backend == "s3"

    @property
    def listen_host_port(self) -> tuple[str, int]:
        return _host_port(self.listen_addr)

    @property
    def metrics_host_port(self) -> tuple[str, int] | None:
        """The separate /metrics listener, or None when /metrics is on the main one."""
        return _host_port(self.metrics_listen_addr) if self.metrics_listen_addr else None

    @property
    def trusted_proxy_networks(self) -> tuple[IPv4Network | IPv6Network, ...]:
        """``trusted_proxies`` parsed; a bare address is a network of one."""
        return tuple(
            ip_network(item.strip(), strict=False)
            for item in self.trusted_proxies.split(",")
            if item.strip()
        )

    def validate(self) -> None:
        """Reject values that cannot work, with the variable's name in the message."""

        def fail(field: str, message: str) -> None:
            raise ConfigurationError(f"{ENV_PREFIX}{field.upper()}: {message}")

        try:
            self.listen_host_port  # noqa: B018 - parsing is the check
        except ValueError:
            fail("listen_addr", f"expected host:port or :port, got {self.listen_addr!r}")
        self._validate_observability(fail)
        url = self.resolved_database_url
        if not url.startswith(("sqlite:///", "postgresql://", "postgres://")):
            fail("database_url", "must start with sqlite:///, postgresql:// or postgres://")
        if self.blob_backend not in ("local", "s3"):
            fail("blob_backend", f"must be local or s3, got {self.blob_backend!r}")
        if self.blob_backend == "s3" and not self.blob_s3_bucket:
            fail("blob_s3_bucket", "is required when PROCELLA_BLOB_BACKEND=s3")
        if self.encryption_key and not _is_hex_key(self.encryption_key):
            fail("encryption_key", "must be 64 hexadecimal characters (32 bytes)")
        if self.is_cluster and not self.encryption_key:
            fail(
                "encryption_key",
                "is required when state is shared (PostgreSQL or S3): every replica must use "
                "the same key. Generate one with: "
                "python -c 'import secrets; print(secrets.token_hex(32))'",
            )
        if self.console_session_key and not _is_hex_key(self.console_session_key):
            fail("console_session_key", "must be 64 hexadecimal characters (32 bytes)")
        if self.console_session_hours <= 0:
            fail("console_session_hours", "must be more than 0")
        if self.lease_max_seconds < 300:
            fail("lease_max_seconds", "must be at least 300: the CLI assumes 5-minute leases")
        for field in (
            "workers",
            "database_pool_max_size",
            "max_request_bytes",
            "oidc_max_expiration_seconds",
        ):
            if getattr(self, field) < 1:
                fail(field, "must be at least 1")
        if self.database_pool_min_size > self.database_pool_max_size:
            fail("database_pool_min_size", "must not exceed PROCELLA_DATABASE_POOL_MAX_SIZE")
        if self.max_inflated_bytes < self.max_request_bytes:
            fail("max_inflated_bytes", "must be at least PROCELLA_MAX_REQUEST_BYTES")

    def _validate_observability(self, fail: Callable[[str, str], None]) -> None:
        try:
            metrics = self.metrics_host_port
        except ValueError:
            metrics = None
            got = self.metrics_listen_addr
            fail("metrics_listen_addr", f"expected host:port or :port, got {got!r}")
        if metrics is not None and metrics[1] in (0, self.listen_host_port[1]):
            fail("metrics_listen_addr", "needs a port of its own, not 0 or the main listener's")
        try:
            self.trusted_proxy_networks  # noqa: B018 - parsing is the check
        except ValueError as exc:
            fail("trusted_proxies", f"expected addresses or networks, comma-separated: {exc}")
        if self.log_format not in ("text", "json"):
            fail("log_format", f"must be text or json, got {self.log_format!r}")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            fail("log_level", f"must be DEBUG, INFO, WARNING or ERROR, got {self.log_level!r}")


SETTINGS: tuple[Setting, ...] = tuple(
    Setting(f.name, f.default, f.metadata["help"], f.metadata["secret"])
    for f in dataclasses.fields(Settings)
)


def _host_port(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return (host or "0.0.0.0", int(port))


def _is_hex_key(text: str) -> bool:
    try:
        return len(bytes.fromhex(text)) == 32
    except ValueError:
        return False


def _read_raw(env: Mapping[str, str], setting: Setting) -> str | None:
    direct = env.get(setting.env)
    file_name = env.get(setting.env + "_FILE")
    if direct is not None and file_name is not None:
        raise ConfigurationError(f"set either {setting.env} or {setting.env}_FILE, not both")
    if file_name is None:
        return direct
    try:
        return Path(file_name).read_text().strip()
    except OSError as exc:
        raise ConfigurationError(f"{setting.env}_FILE: cannot read {file_name}: {exc}") from None


def markdown_table() -> str:
    """The settings table of the README."""
    lines = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for s in SETTINGS:
        shown = str(s.default).lower() if isinstance(s.default, bool) else str(s.default)
        shown = f"`{shown}`" if shown else "(empty)"
        lines.append(f"| `{s.env}` | {shown} | {s.help} |")
    return "\n".join(lines)
