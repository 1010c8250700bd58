"""Liveness and readiness, as load balancers and orchestrators see them."""

from __future__ import annotations

from quart.typing import TestAppProtocol as AppUnderTest

from procella.app import mark_draining
from tests.helpers import quart_app, services_of


async def test_healthz_and_readyz(app: AppUnderTest) -> None:
    client = app.test_client()
    assert (await client.get("/healthz")).status_code == 200
    assert (await client.get("/readyz")).status_code == 200


async def test_readyz_fails_while_draining_but_healthz_does_not(app: AppUnderTest) -> None:
    client = app.test_client()
    mark_draining(quart_app(app))
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert (await response.get_json()) == {"code": 503, "message": "draining"}
    assert (await client.get("/healthz")).status_code == 200


async def test_readyz_fails_when_a_store_is_unreachable(app: AppUnderTest) -> None:
    client = app.test_client()
    await services_of(app).blobs.close()
    blobs = services_of(app).blobs
    # Local blobs: the folder is gone; S3: the client is closed. Either way: not ready.
    if hasattr(blobs, "root"):
        import shutil

        shutil.rmtree(blobs.root)
    response = await client.get("/readyz")
    assert response.status_code == 503
