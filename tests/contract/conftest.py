"""Each seam's contract suite runs on every backend of that seam."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from procella.blobs.base import BlobStore
from procella.blobs.local import LocalBlobStore
from procella.blobs.s3 import S3BlobStore
from procella.metadata.base import MetadataStore
from procella.metadata.postgres import PostgresStore
from procella.metadata.sqlite import SqliteStore
from procella.settings import Settings

StoreFactory = Callable[[], MetadataStore]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """Makes unopened stores on one shared database (several "replicas" of it)."""
    if request.param == "sqlite":
        path = tmp_path / "meta.db"
        return lambda: SqliteStore(path)
    url: str = request.getfixturevalue("pg_url")
    settings = Settings(database_url=url, encryption_key="00" * 32, database_pool_max_size=4)
    return lambda: PostgresStore(url, settings)


@pytest.fixture
async def meta(store_factory: StoreFactory) -> AsyncIterator[MetadataStore]:
    store = store_factory()
    await store.open()
    await store.migrate()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
async def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    store: BlobStore
    if request.param == "local":
        store = LocalBlobStore(tmp_path / "blobs")
    else:
        store = S3BlobStore(
            Settings(
                blob_backend="s3",
                blob_s3_bucket=request.getfixturevalue("s3_bucket"),
                blob_s3_endpoint=request.getfixturevalue("s3_endpoint"),
                blob_s3_prefix="pre/",
                encryption_key="00" * 32,
            )
        )
    await store.open()
    try:
        yield store
    finally:
        await store.close()
