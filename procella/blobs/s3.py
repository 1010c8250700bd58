"""Blob store on S3 or any S3-compatible server (MinIO, ...), through aioboto3.

Credentials come from the standard AWS chain (environment, shared files, instance or
task roles). Large objects are uploaded in parts (multipart upload). A missing
key becomes ``BlobNotFound``; every other failure of S3 or of the transfer itself (a reset
while a body streams, a timeout) becomes ``TransientStoreError``.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aioboto3
import aiohttp
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from procella.blobs.base import BlobInfo, BlobNotFound, check_key
from procella.errors import ConfigurationError, TransientStoreError
from procella.settings import Settings

# Objects above this size go up in parts of this size (S3's minimum part is 5 MiB).
MULTIPART_BYTES = 16 * 1024 * 1024
_MISSING = ("NoSuchKey", "404", "NotFound")


@asynccontextmanager
async def _transient_errors() -> AsyncIterator[None]:
    """S3 errors (throttling, timeouts, a flaky endpoint) are worth the CLI's retry: a 503.

    botocore wraps most transport errors (``BotoCoreError``), but not all of those raised
    while a body streams: aiohttp's own (``ClientPayloadError`` on a reset mid-body) and
    timeouts (``TimeoutError``, an ``OSError``) arrive as they are.
    """
    try:
        yield
    except (BotoCoreError, ClientError, aiohttp.ClientError, OSError) as exc:
        raise TransientStoreError(f"blob store unavailable, retry: {exc}", "blob_store") from exc


class S3BlobStore:
    def __init__(self, settings: Settings) -> None:
        self.bucket = settings.blob_s3_bucket
        self.prefix = settings.blob_s3_prefix
        self.endpoint = settings.blob_s3_endpoint or None
        self.region = settings.blob_s3_region
        self._session = aioboto3.Session()
        self._client_cm: Any = None
        self._client: Any = None

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    async def open(self) -> None:
        config = Config(
            # One quick retry here; the CLI retries a 503 itself (four times, with backoff),
            # so more retries here would only hold the request for tens of seconds.
            retries={"max_attempts": 2, "mode": "standard"},
            connect_timeout=5,
            read_timeout=120,
            # Custom endpoints (MinIO, moto) are addressed by path, not by bucket subdomain.
            s3={"addressing_style": "path" if self.endpoint else "auto"},
        )
        self._client_cm = self._session.client(
            "s3", endpoint_url=self.endpoint, region_name=self.region, config=config
        )
        self._client = await self._client_cm.__aenter__()
        try:
            await self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            await self.close()
            if code in ("404", "NoSuchBucket", "NotFound"):
                raise ConfigurationError(
                    f"S3 bucket '{self.bucket}' does not exist; create it before starting"
                ) from None
            raise ConfigurationError(f"cannot use S3 bucket '{self.bucket}': {exc}") from None
        except (BotoCoreError, OSError) as exc:
            await self.close()
            where = self.endpoint or f"region {self.region}"
            raise ConfigurationError(f"cannot reach S3 ({where}): {exc}") from None

    async def close(self) -> None:
        if self._client_cm is not None:
            await self._client_cm.__aexit__(None, None, None)
        self._client_cm = None
        self._client = None

    async def ping(self) -> None:
        async with _transient_errors():
            await self._client.head_bucket(Bucket=self.bucket)

    async def put(self, key: str, data: bytes) -> None:
        full = self._key(key)
        async with _transient_errors():
            # Bodies go as file objects: aiohttp streams those instead of copying raw bytes.
            if len(data) <= MULTIPART_BYTES:
                body = io.BytesIO(data)
                await self._client.put_object(Bucket=self.bucket, Key=full, Body=body)
                return
            await self._put_multipart(full, data)

    async def _put_multipart(self, full_key: str, data: bytes) -> None:
        upload = await self._client.create_multipart_upload(Bucket=self.bucket, Key=full_key)
        upload_id = upload["UploadId"]
        try:
            parts = []
            for number, start in enumerate(range(0, len(data), MULTIPART_BYTES), start=1):
                chunk = io.BytesIO(data[start : start + MULTIPART_BYTES])
                part = await self._client.upload_part(
                    Bucket=self.bucket,
                    Key=full_key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=chunk,
                )
                parts.append({"ETag": part["ETag"], "PartNumber": number})
            await self._client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=full_key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            await self._client.abort_multipart_upload(
                Bucket=self.bucket, Key=full_key, UploadId=upload_id
            )
            raise

    async def get(self, key: str) -> bytes:
        async with _transient_errors():
            try:
                response = await self._client.get_object(Bucket=self.bucket, Key=self._key(key))
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in _MISSING:
                    raise BlobNotFound(key) from None
                raise
            async with response["Body"] as body:
                data: bytes = await body.read()
        return data

    async def delete(self, key: str) -> None:
        async with _transient_errors():
            await self._client.delete_object(Bucket=self.bucket, Key=self._key(key))

    async def scan(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        paginator = self._client.get_paginator("list_objects_v2")
        pages = aiter(paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix))
        while True:
            async with _transient_errors():
                page = await anext(pages, None)
            if page is None:
                return
            for item in page.get("Contents", []):
                key = item["Key"][len(self.prefix) :]
                yield BlobInfo(key, int(item["Size"]), item["LastModified"].timestamp())
