"""How the blob stores fail: a failed write leaves the old object and no debris, an S3
bucket that disappears is an outage (503) and not a missing checkpoint (404), and a
superseded text that cannot be deleted is left to the garbage collector.

The contract suite (tests/contract/test_blob_store.py) checks what every store does;
these are the failures particular to each backend, on real files and a real S3 server.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import boto3
import pytest

from procella.blobs.local import LocalBlobStore
from procella.blobs.s3 import S3BlobStore
from procella.errors import TransientStoreError
from procella.settings import Settings
from procella.state.cache import CheckpointCache
from procella.state.texts import CheckpointTexts


@pytest.fixture
async def local(tmp_path: Path) -> LocalBlobStore:
    store = LocalBlobStore(tmp_path / "blobs")
    await store.open()
    return store


async def test_a_failed_write_keeps_the_old_object_and_leaves_no_temporary_file(
    local: LocalBlobStore,
) -> None:
    await local.put("checkpoints/s/a/b", b"under a")
    # "checkpoints/s/a" is a folder now: the write is made aside, and its rename fails.
    with pytest.raises(IsADirectoryError):
        await local.put("checkpoints/s/a", b"new")
    assert await local.get("checkpoints/s/a/b") == b"under a"
    leftovers = [p.name for p in local.root.rglob("*") if p.is_file()]
    assert leftovers == ["b"]


async def test_scan_skips_the_files_of_writes_in_flight(local: LocalBlobStore) -> None:
    await local.put("checkpoints/s/1", b"x")
    # A write in flight (or one a crash interrupted) is a temporary file beside its target.
    (local.root / "checkpoints" / "s" / ".tmp-abc123").write_bytes(b"partial")
    assert [info.key async for info in local.scan("checkpoints/")] == ["checkpoints/s/1"]


async def test_a_missing_folder_fails_the_ping(local: LocalBlobStore) -> None:
    await local.put("k", b"x")
    (local.root / "k").unlink()
    local.root.rmdir()
    with pytest.raises(OSError, match="missing"):
        await local.ping()


async def test_a_superseded_text_that_cannot_be_deleted_is_left_to_the_gc(
    local: LocalBlobStore, caplog: pytest.LogCaptureFixture
) -> None:
    texts = CheckpointTexts(local, inline_max_bytes=0, cache=CheckpointCache(0))
    stored = await texts.store("s", b"a text")
    assert stored.blob_key is not None
    # A folder under the key: the delete fails, and that is only logged, not raised (the
    # step that superseded the text is stored already).
    blocked = "checkpoints/s/blocked"
    await local.put(f"{blocked}/inner", b"x")
    with caplog.at_level(logging.WARNING, logger="procella.state.texts"):
        await texts.delete(blocked)
    assert f"deleting superseded checkpoint blob {blocked} failed" in caplog.text
    assert await local.get(f"{blocked}/inner") == b"x"
    await texts.delete(stored.blob_key)  # a deletable one goes
    assert [info.key async for info in local.scan()] == [f"{blocked}/inner"]


@pytest.fixture
async def s3(s3_endpoint: str, s3_bucket: str) -> AsyncIterator[S3BlobStore]:
    store = S3BlobStore(
        Settings(
            blob_backend="s3",
            blob_s3_bucket=s3_bucket,
            blob_s3_endpoint=s3_endpoint,
            encryption_key="00" * 32,
        )
    )
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def test_a_bucket_deleted_under_a_running_store_is_an_outage_not_a_missing_key(
    s3: S3BlobStore, s3_endpoint: str
) -> None:
    """NoSuchBucket is S3's answer for a key in a bucket that is gone: a missing
    checkpoint would be a 404 the CLI gives up on; this is the deployment's fault."""
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").delete_bucket(
        Bucket=s3.bucket
    )
    with pytest.raises(TransientStoreError):
        await s3.get("checkpoints/s/1")
    with pytest.raises(TransientStoreError):
        await s3.ping()
    with pytest.raises(TransientStoreError):
        _ = [info async for info in s3.scan("checkpoints/")]
