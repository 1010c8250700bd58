"""The blob seam: where checkpoint texts too large for the database are kept.

Keys are relative paths made of ``[A-Za-z0-9._-]`` segments joined by ``/``. Writes are
atomic (a reader sees the old object or the new one, never part of one), and a backend
raises ``BlobNotFound`` for a missing key and nothing else of its own.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

_KEY = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")


class BlobNotFound(Exception):
    """No blob under that key."""


@dataclass(frozen=True)
class BlobInfo:
    key: str
    size: int
    modified_at: float  # seconds since the epoch


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe relative key, else raise ``ValueError``."""
    if not _KEY.match(key) or any(part in (".", "..") for part in key.split("/")):
        raise ValueError(f"invalid blob key {key!r}")
    return key


class BlobStore(Protocol):
    async def open(self) -> None:
        """Check the store is usable; raise ``ConfigurationError`` with the reason if not."""
        ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise if the store cannot be reached now."""
        ...

    async def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``, replacing any previous object, atomically."""
        ...

    async def get(self, key: str) -> bytes:
        """The object's bytes; ``BlobNotFound`` if there is none."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object; a missing key is not an error."""
        ...

    def scan(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        """Every object whose key starts with ``prefix``, in no particular order."""
        ...
