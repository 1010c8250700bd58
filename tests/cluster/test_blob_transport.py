"""The blob store's transport failing mid-transfer is a 503 the CLI retries, never a 500.

The S3 server is moto's, reached through a TCP proxy that forwards bytes both ways and,
once told to, cuts every connection after some bytes of the server's answer: a reset
while the blob is read, as a load balancer or a restarting MinIO causes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest

from procella import create_app
from procella.blobs.s3 import S3BlobStore
from procella.errors import TransientStoreError
from procella.settings import Settings
from tests.helpers import Api, assert_error, untyped

STACK = "acme/web/dev"


class CuttingProxy:
    """Forwards TCP to ``upstream``; after ``cut_after(n)``, resets every connection once
    ``n`` more bytes of answers have gone through."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.budget: int | None = None
        self.cuts = 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connect, "127.0.0.1", 0)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 5)

    def cut_after(self, n: int | None) -> None:
        self.budget = n

    async def _connect(
        self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        server_r, server_w = await asyncio.open_connection(*self.upstream)
        pumps = [
            asyncio.create_task(self._pump(client_r, server_w, None)),
            asyncio.create_task(self._pump(server_r, client_w, (client_w, server_w))),
        ]
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for task in pumps:
            task.cancel()
        for writer in (client_w, server_w):
            writer.close()

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        answers: tuple[asyncio.StreamWriter, ...] | None,
    ) -> None:
        with contextlib.suppress(OSError):
            while chunk := await reader.read(16384):
                if answers is not None and self.budget is not None:
                    if len(chunk) >= self.budget:
                        writer.write(chunk[: self.budget])
                        await writer.drain()
                        self.budget = 0
                        self.cuts += 1
                        for cut in answers:
                            cut.transport.abort()  # a reset, not a clean end
                        return
                    self.budget -= len(chunk)
                writer.write(chunk)
                await writer.drain()


@pytest.fixture
async def proxy(s3_endpoint: str) -> AsyncIterator[CuttingProxy]:
    found = CuttingProxy(s3_endpoint)
    await found.start()
    try:
        yield found
    finally:
        await found.stop()


@pytest.fixture
def proxied(cluster_settings: Settings, proxy: CuttingProxy) -> Settings:
    """The cluster deployment, its S3 traffic through the proxy; checkpoints all in S3."""
    return cluster_settings.replace(
        blob_s3_endpoint=proxy.url, checkpoint_inline_max_bytes=1024, checkpoint_cache_bytes=0
    )


async def test_a_reset_while_a_blob_is_read_is_transient(
    proxied: Settings, proxy: CuttingProxy
) -> None:
    store = S3BlobStore(proxied)
    await store.open()
    try:
        data = bytes(range(256)) * 4096  # 1 MiB
        await store.put("a/blob", data)
        proxy.cut_after(64 * 1024)  # past the headers, inside the body
        with pytest.raises(TransientStoreError):
            await store.get("a/blob")
        assert proxy.cuts >= 1
        proxy.cut_after(None)
        assert await store.get("a/blob") == data
    finally:
        await store.close()


async def test_a_reset_during_export_is_503_with_retry_after(
    proxied: Settings, proxy: CuttingProxy
) -> None:
    async with create_app(proxied).test_app() as test_app:
        api = Api(test_app.test_client())
        await api.new_stack(STACK)
        state = untyped(3000)  # about 600 kB: in the blob store, read in several packets
        response = await api.import_state(STACK, state)
        assert response.status_code == 200, await response.get_data()
        before = await api.export_bytes(STACK)
        proxy.cut_after(64 * 1024)
        response = await api.export(STACK)
        await assert_error(response, 503)
        assert response.headers["Retry-After"] == "1"
        assert proxy.cuts >= 1
        proxy.cut_after(None)
        assert await api.export_bytes(STACK) == before  # the retry succeeds, nothing changed
