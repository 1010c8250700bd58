"""Where checkpoint texts live: inline in the database when small, else in the blob store.

Every write gets a fresh blob key (``checkpoints/<stack id>/<sha256>.<random>``): a key is
never reused, so the garbage collector, which removes blobs that no row references once
they are older than a grace period, can never delete a blob that a write in flight is
about to point a row at. The blob is always written before that row.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass

from procella.blobs.base import BlobStore
from procella.metadata.base import CheckpointRecord
from procella.state.cache import CheckpointCache
from procella.state.checkpoints import sha256_hex

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredText:
    """A checkpoint text ready for its database row."""

    sha256: str
    size: int
    data: bytes | None
    blob_key: str | None


class CheckpointTexts:
    def __init__(self, blobs: BlobStore, inline_max_bytes: int, cache: CheckpointCache) -> None:
        self.blobs = blobs
        self.inline_max_bytes = inline_max_bytes
        self.cache = cache

    async def store(self, stack_id: str, text: bytes, sha256: str | None = None) -> StoredText:
        """Put ``text`` where it belongs (blob first when large) and describe its row."""
        digest = sha256 or sha256_hex(text)
        self.cache.put(digest, text, stack_id)
        if len(text) <= self.inline_max_bytes:
            return StoredText(digest, len(text), text, None)
        key = f"checkpoints/{stack_id}/{digest}.{secrets.token_hex(8)}"
        await self.blobs.put(key, text)
        return StoredText(digest, len(text), None, key)

    async def load_full(self, record: CheckpointRecord) -> bytes:
        """The full text a row holds (inline or in the blob store). Raises BlobNotFound
        when the blob is gone: a compaction may have superseded it since the row was read.
        """
        if record.data is not None:
            return record.data
        assert record.blob_key is not None, "a row without a full text has a base version"
        return await self.blobs.get(record.blob_key)

    async def delete(self, blob_key: str) -> None:
        """Delete a superseded full text now; if this fails, the GC deletes it later."""
        try:
            await self.blobs.delete(blob_key)
        except Exception:
            log.warning("deleting superseded checkpoint blob %s failed; the GC will", blob_key)
