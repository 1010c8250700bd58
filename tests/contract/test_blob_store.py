"""The BlobStore contract (procella/blobs/base.py), on local files and on S3."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from procella.blobs.base import BlobNotFound, BlobStore
from procella.blobs.local import LocalBlobStore
from procella.blobs.s3 import S3BlobStore
from procella.errors import ConfigurationError
from procella.settings import Settings


async def test_put_get_round_trip_keeps_every_byte(blobs: BlobStore) -> None:
    data = bytes(range(256)) * 1000
    await blobs.put("checkpoints/s1/a", data)
    assert await blobs.get("checkpoints/s1/a") == data


async def test_put_replaces(blobs: BlobStore) -> None:
    await blobs.put("k/1", b"old")
    await blobs.put("k/1", b"new")
    assert await blobs.get("k/1") == b"new"


async def test_missing_key_is_blob_not_found(blobs: BlobStore) -> None:
    with pytest.raises(BlobNotFound):
        await blobs.get("checkpoints/nope")


async def test_delete_removes_and_tolerates_missing(blobs: BlobStore) -> None:
    await blobs.put("k/gone", b"x")
    await blobs.delete("k/gone")
    with pytest.raises(BlobNotFound):
        await blobs.get("k/gone")
    await blobs.delete("k/gone")  # no error


async def test_scan_lists_keys_sizes_and_times_under_a_prefix(blobs: BlobStore) -> None:
    before = time.time() - 60
    await blobs.put("checkpoints/a/1", b"12345")
    await blobs.put("checkpoints/b/2", b"1")
    await blobs.put("other/3", b"zz")
    found = {info.key: info async for info in blobs.scan("checkpoints/")}
    assert set(found) == {"checkpoints/a/1", "checkpoints/b/2"}
    assert found["checkpoints/a/1"].size == 5
    assert all(before < info.modified_at < time.time() + 60 for info in found.values())
    everything = {info.key async for info in blobs.scan()}
    assert everything == {"checkpoints/a/1", "checkpoints/b/2", "other/3"}


async def test_large_blob_round_trip(blobs: BlobStore) -> None:
    # Over the S3 multipart threshold, so that path is exercised too.
    data = os.urandom(1024) * (20 * 1024)
    await blobs.put("checkpoints/big", data)
    assert await blobs.get("checkpoints/big") == data


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "..", "a/./b", "sp ace", "a\\b"])
async def test_unsafe_keys_are_refused(blobs: BlobStore, key: str) -> None:
    with pytest.raises(ValueError):
        await blobs.put(key, b"x")


async def test_local_store_refuses_an_unwritable_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigurationError, match="not writable"):
        await LocalBlobStore(blocker / "blobs").open()


async def test_s3_store_refuses_a_missing_bucket(s3_endpoint: str) -> None:
    store = S3BlobStore(
        Settings(
            blob_backend="s3",
            blob_s3_bucket="procella-no-such-bucket",
            blob_s3_endpoint=s3_endpoint,
            encryption_key="00" * 32,
        )
    )
    with pytest.raises(ConfigurationError, match="does not exist"):
        await store.open()


async def test_s3_store_refuses_an_unreachable_endpoint() -> None:
    from procella_testing.processes import free_port

    store = S3BlobStore(
        Settings(
            blob_backend="s3",
            blob_s3_bucket="b",
            blob_s3_endpoint=f"http://127.0.0.1:{free_port()}",
            encryption_key="00" * 32,
        )
    )
    with pytest.raises(ConfigurationError, match="cannot reach S3"):
        await store.open()


@pytest.mark.s3
async def test_an_s3_outage_is_a_transient_error(tmp_path: Path) -> None:
    """A store that stops answering is worth a retry (503), not a 500."""
    from procella.errors import TransientStoreError
    from procella_testing.servers import create_bucket, s3_server

    with s3_server() as endpoint:
        store = S3BlobStore(
            Settings(
                blob_backend="s3",
                blob_s3_bucket=create_bucket(endpoint),
                blob_s3_endpoint=endpoint,
                encryption_key="00" * 32,
            )
        )
        await store.open()
        await store.put("k/1", b"x")
    try:
        for operation in (store.put("k/2", b"y"), store.get("k/1"), store.delete("k/1")):
            with pytest.raises(TransientStoreError):
                await operation
    finally:
        await store.close()
