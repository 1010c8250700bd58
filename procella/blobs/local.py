"""Blob store on local files: the embedded default. One process tree, one folder."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from procella.blobs.base import BlobInfo, BlobNotFound, check_key
from procella.errors import ConfigurationError


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    async def open(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / ".probe"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise ConfigurationError(f"blob folder {self.root} is not writable: {exc}") from exc

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        if not self.root.is_dir():
            raise OSError(f"blob folder {self.root} is missing")

    async def put(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._put, self._path(key), data)

    @staticmethod
    def _put(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write aside, then rename: a reader sees the whole old file or the whole new one.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise BlobNotFound(key) from None

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._path(key).unlink, True)

    async def scan(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        for info in await asyncio.to_thread(self._scan, prefix):
            yield info

    def _scan(self, prefix: str) -> list[BlobInfo]:
        found: list[BlobInfo] = []
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if name.startswith(".tmp-") or name == ".probe":
                    continue
                path = Path(dirpath) / name
                key = path.relative_to(self.root).as_posix()
                if not key.startswith(prefix):
                    continue
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    continue
                found.append(BlobInfo(key, stat.st_size, stat.st_mtime))
        return found
