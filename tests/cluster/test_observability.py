"""Metrics of the PostgreSQL store: 503s by cause (PostgreSQL's own errors, raised by a
trigger inside the real statement) and the pool's gauges."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from quart import typing as quart_typing

from procella import create_app
from procella.settings import Settings
from procella_testing import servers
from procella_testing.metrics_text import Samples, delta, parse, total
from tests.helpers import Api, assert_error


@pytest.fixture
async def app(cluster_settings: Settings) -> AsyncIterator[quart_typing.TestAppProtocol]:
    async with create_app(cluster_settings).test_app() as test_app:
        yield test_app


async def scrape(app: quart_typing.TestAppProtocol) -> Samples:
    response = await app.test_client().get("/metrics")
    assert response.status_code == 200
    return parse(await response.get_data(as_text=True))


@pytest.mark.parametrize(
    ("sqlstate", "cause"), [("40001", "serialization_failure"), ("40P01", "deadlock")]
)
async def test_transient_errors_are_counted_by_cause(
    app: quart_typing.TestAppProtocol, cluster_settings: Settings, sqlstate: str, cause: str
) -> None:
    api = Api(app.test_client())
    servers.install_failing_trigger(cluster_settings.database_url, "stacks", sqlstate)
    before = await scrape(app)
    await assert_error(await api.create_stack("acme/web/dev"), 503)
    moved = delta(before, await scrape(app))
    assert total(moved, "procella_transient_errors_total", cause=cause) == 1
    assert total(moved, "procella_transient_errors_total") == 1


async def test_pool_gauges(app: quart_typing.TestAppProtocol, cluster_settings: Settings) -> None:
    samples = await scrape(app)
    maximum = cluster_settings.database_pool_max_size
    assert total(samples, "procella_db_pool_max_connections") == maximum
    assert 1 <= total(samples, "procella_db_pool_connections") <= maximum
    assert total(samples, "procella_db_checkout_seconds_count") > 0
    # The app's first GC cycle may be waiting for a connection right now; none stays waiting.
    async with asyncio.timeout(10):
        while total(samples, "procella_db_pool_waiting") != 0:
            await asyncio.sleep(0.05)
            samples = await scrape(app)
