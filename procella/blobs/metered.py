"""A ``BlobStore`` that counts and times the operations of the one it wraps, by backend.

``open_blob_store`` wraps every backend in it. Attributes other than the store's methods
(a local store's ``root``, say) are the wrapped store's, so the wrapper is invisible to
whoever reaches past the protocol (tests, operators' scripts).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

from procella import metrics
from procella.blobs.base import BlobInfo, BlobNotFound, BlobStore


class MeteredBlobStore:
    def __init__(self, inner: BlobStore, backend: str) -> None:
        self.inner = inner
        self.backend = backend

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def ping(self) -> None:
        with self._timed("ping"):
            await self.inner.ping()

    async def put(self, key: str, data: bytes) -> None:
        with self._timed("put"):
            await self.inner.put(key, data)

    async def get(self, key: str) -> bytes:
        with self._timed("get"):
            return await self.inner.get(key)

    async def delete(self, key: str) -> None:
        with self._timed("delete"):
            await self.inner.delete(key)

    async def scan(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        # One operation for the whole listing, however many pages it takes.
        with self._timed("scan"):
            async for info in self.inner.scan(prefix):
                yield info

    @contextmanager
    def _timed(self, operation: str) -> Iterator[None]:
        start = time.perf_counter()
        result = "error"
        try:
            yield
            result = "ok"
        except BlobNotFound:
            result = "not_found"
            raise
        finally:
            metrics.BLOB_OPS.labels(self.backend, operation, result).observe(
                time.perf_counter() - start
            )
