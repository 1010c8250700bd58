"""The blob seam. ``open_blob_store`` picks the backend from the settings."""

from __future__ import annotations

from procella.blobs.base import BlobStore
from procella.settings import Settings


def open_blob_store(settings: Settings) -> BlobStore:
    """The blob store for ``settings`` (not yet opened: call ``await store.open()``)."""
    if settings.blob_backend == "s3":
        from procella.blobs.s3 import S3BlobStore

        return S3BlobStore(settings)
    from procella.blobs.local import LocalBlobStore

    return LocalBlobStore(settings.resolved_blob_local_path)
