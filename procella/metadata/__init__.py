"""The metadata seam. ``open_metadata_store`` picks the backend from the database URL."""

from __future__ import annotations

from pathlib import Path

from procella.metadata.base import MetadataStore
from procella.settings import Settings


def open_metadata_store(settings: Settings) -> MetadataStore:
    """The store for ``settings`` (not yet opened: call ``await store.open()``)."""
    url = settings.resolved_database_url
    if url.startswith("sqlite:///"):
        from procella.metadata.sqlite import SqliteStore

        return SqliteStore(Path(url.removeprefix("sqlite:///")))
    from procella.metadata.postgres import PostgresStore

    return PostgresStore(url, settings)
