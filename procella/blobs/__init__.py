"""The blob seam. ``open_blob_store`` picks the backend from the settings."""

from __future__ import annotations

from procella.blobs.base import BlobStore
from procella.blobs.metered import MeteredBlobStore
from procella.settings import Settings


def open_blob_store(settings: Settings) -> BlobStore:
    """The blob store for ``settings`` (not yet opened: call ``await store.open()``),
    with its operations counted and timed (``procella_blob_operation_seconds``)."""
    store: BlobStore
    if settings.blob_backend == "s3":
        from procella.blobs.s3 import S3BlobStore

        store = S3BlobStore(settings)
    else:
        from procella.blobs.local import LocalBlobStore

        store = LocalBlobStore(settings.resolved_blob_local_path)
    return MeteredBlobStore(store, settings.blob_backend)
