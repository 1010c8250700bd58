"""procella.settings: environment parsing, *_FILE variants, validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from procella.errors import ConfigurationError
from procella.settings import SETTINGS, Settings, markdown_table

KEY = "ab" * 32


def env(**values: str) -> dict[str, str]:
    return {f"PROCELLA_{k.upper()}": v for k, v in values.items()}


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.listen_addr == ":9090"
    assert settings.listen_host_port == ("0.0.0.0", 9090)
    # Off: the CLI's delta checkpoints drop pending operations (issue 8, docs/architecture.md).
    assert settings.delta_checkpoints is False
    assert not settings.is_cluster
    assert settings.resolved_database_url.startswith("sqlite:///")
    assert settings.resolved_database_url.endswith("/procella.db")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", True),
        ("true", True),
        ("TRUE", True),
        ("yes", True),
        ("On", True),
        (" true ", True),
        ("0", False),
        ("false", False),
        ("no", False),
        ("off", False),
        ("", False),
    ],
)
def test_bool(text: str, value: bool) -> None:
    assert Settings.from_env(env(delta_checkpoints=text)).delta_checkpoints is value


@pytest.mark.parametrize("text", ["maybe", "2", "tru", "yes please"])
def test_bool_invalid(text: str) -> None:
    with pytest.raises(ConfigurationError, match="PROCELLA_DELTA_CHECKPOINTS"):
        Settings.from_env(env(delta_checkpoints=text))


def test_int_and_float() -> None:
    settings = Settings.from_env(env(workers="4", request_timeout="2.5", lease_max_seconds="600"))
    assert settings.workers == 4 and isinstance(settings.workers, int)
    assert settings.request_timeout == 2.5
    assert settings.lease_max_seconds == 600


def test_leases_shorter_than_the_cli_assumes_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="PROCELLA_LEASE_MAX_SECONDS"):
        Settings.from_env(env(lease_max_seconds="60"))


@pytest.mark.parametrize(
    ("name", "text"),
    [("workers", "four"), ("workers", "1.5"), ("request_timeout", "soon"), ("workers", "")],
)
def test_number_invalid(name: str, text: str) -> None:
    with pytest.raises(ConfigurationError, match=f"PROCELLA_{name.upper()}"):
        Settings.from_env(env(**{name: text}))


def test_file_variant(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(f"  {KEY}\n\n")
    token_file = tmp_path / "token"
    token_file.write_text("pul-secret\n")
    settings = Settings.from_env(
        {
            "PROCELLA_ENCRYPTION_KEY_FILE": str(key_file),
            "PROCELLA_ADMIN_TOKEN_FILE": str(token_file),
            "PROCELLA_WORKERS_FILE": str(_write(tmp_path / "w", "3\n")),
        }
    )
    assert settings.encryption_key == KEY
    assert settings.admin_token == "pul-secret"
    assert settings.workers == 3


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_file_and_value_both_set(tmp_path: Path) -> None:
    key_file = _write(tmp_path / "key", KEY)
    with pytest.raises(ConfigurationError, match="PROCELLA_ENCRYPTION_KEY"):
        Settings.from_env(
            {"PROCELLA_ENCRYPTION_KEY": KEY, "PROCELLA_ENCRYPTION_KEY_FILE": str(key_file)}
        )


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="PROCELLA_ADMIN_TOKEN_FILE"):
        Settings.from_env({"PROCELLA_ADMIN_TOKEN_FILE": str(tmp_path / "nope")})


def test_overrides_win() -> None:
    settings = Settings.from_env(env(workers="4"), workers=7)
    assert settings.workers == 7


@pytest.mark.parametrize(
    "values",
    [
        {"database_url": "postgresql://u@h/db"},
        {"database_url": "postgres://u@h/db"},
        {"blob_backend": "s3", "blob_s3_bucket": "b"},
    ],
)
def test_cluster_needs_a_key(values: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError, match="PROCELLA_ENCRYPTION_KEY"):
        Settings.from_env(env(**values))
    settings = Settings.from_env(env(**values, encryption_key=KEY))
    assert settings.is_cluster


@pytest.mark.parametrize("key", ["abc", "zz" * 32, "ab" * 31, "ab" * 33, KEY + " x"])
def test_invalid_key(key: str) -> None:
    with pytest.raises(ConfigurationError, match="PROCELLA_ENCRYPTION_KEY"):
        Settings.from_env(env(encryption_key=key))


def test_key_is_accepted_in_upper_case() -> None:
    assert Settings.from_env(env(encryption_key=KEY.upper())).encryption_key == KEY.upper()


@pytest.mark.parametrize(
    ("values", "variable"),
    [
        ({"listen_addr": "nope"}, "LISTEN_ADDR"),
        ({"listen_addr": "host:port"}, "LISTEN_ADDR"),
        ({"database_url": "mysql://x"}, "DATABASE_URL"),
        ({"blob_backend": "gcs"}, "BLOB_BACKEND"),
        ({"blob_backend": "s3", "encryption_key": KEY}, "BLOB_S3_BUCKET"),
        ({"workers": "0"}, "WORKERS"),
        ({"lease_max_seconds": "0"}, "LEASE_MAX_SECONDS"),
        ({"max_request_bytes": "0"}, "MAX_REQUEST_BYTES"),
        ({"max_request_bytes": "100", "max_inflated_bytes": "99"}, "MAX_INFLATED_BYTES"),
        ({"database_pool_min_size": "5", "database_pool_max_size": "2"}, "DATABASE_POOL_MIN_SIZE"),
        ({"metrics_listen_addr": "nope"}, "METRICS_LISTEN_ADDR"),
        ({"metrics_listen_addr": ":9090"}, "METRICS_LISTEN_ADDR"),  # the main listener's port
        ({"metrics_listen_addr": ":0"}, "METRICS_LISTEN_ADDR"),
        ({"log_format": "xml"}, "LOG_FORMAT"),
        ({"log_level": "LOUD"}, "LOG_LEVEL"),
    ],
)
def test_validation(values: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigurationError, match=f"PROCELLA_{variable}"):
        Settings.from_env(env(**values))


def test_listen_addr_forms() -> None:
    assert Settings(listen_addr="127.0.0.1:8080").listen_host_port == ("127.0.0.1", 8080)
    assert Settings(listen_addr=":1").listen_host_port == ("0.0.0.0", 1)
    assert Settings().metrics_host_port is None
    assert Settings(metrics_listen_addr=":9100").metrics_host_port == ("0.0.0.0", 9100)


def test_derived_paths(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path))
    assert settings.resolved_database_url == "sqlite:///" + str(tmp_path.resolve() / "procella.db")
    assert settings.resolved_blob_local_path == (tmp_path / "blobs").resolve()
    explicit = Settings(data_dir=str(tmp_path), blob_local_path=str(tmp_path / "b"))
    assert explicit.resolved_blob_local_path == (tmp_path / "b").resolve()


def test_unknown_variables_are_ignored() -> None:
    assert Settings.from_env({"PROCELLA_NO_SUCH_THING": "1", "OTHER": "x"}) == Settings()


def test_every_setting_is_in_the_table() -> None:
    table = markdown_table()
    for setting in SETTINGS:
        assert f"`{setting.env}`" in table
    assert len(SETTINGS) == len(Settings.__dataclass_fields__)


def test_replace_does_not_mutate() -> None:
    base = Settings()
    changed = base.replace(workers=9)
    assert base.workers == 1 and changed.workers == 9
