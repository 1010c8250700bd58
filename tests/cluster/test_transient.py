"""Transient database failures become a 503 the CLI retries: never a 500, never half a write.

The failures are PostgreSQL's own: a trigger raises serialization_failure (40001) or
deadlock_detected (40P01) from inside the real statement, and a real server restart cuts
every pooled connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from procella import create_app
from procella.settings import Settings
from procella_testing import servers
from tests.helpers import Api, assert_error, assert_ok, compact, untyped

STACK = "acme/web/dev"


@pytest.fixture
async def api(cluster_settings: Settings) -> AsyncIterator[Api]:
    async with create_app(cluster_settings).test_app() as test_app:
        yield Api(test_app.test_client())


async def assert_retry_later(response: object) -> None:
    await assert_error(response, 503)
    assert response.headers["Retry-After"] == "1"  # type: ignore[attr-defined]


@pytest.mark.parametrize("sqlstate", ["40001", "40P01"])
async def test_failed_stack_create_is_503_and_leaves_nothing(
    api: Api, cluster_settings: Settings, sqlstate: str
) -> None:
    servers.install_failing_trigger(cluster_settings.database_url, "stacks", sqlstate)
    await assert_retry_later(await api.create_stack(STACK, tags={"a": "b"}))
    await assert_error(await api.get_stack(STACK), 404)
    servers.remove_failing_trigger(cluster_settings.database_url, "stacks")
    await api.new_stack(STACK, tags={"a": "b"})  # the retry succeeds
    assert (await api.stack_json(STACK))["tags"] == {"a": "b"}


async def test_failed_checkpoint_is_503_and_the_retry_is_stored(
    api: Api, cluster_settings: Settings
) -> None:
    await api.new_stack(STACK)
    update = await api.started(STACK)
    servers.install_failing_trigger(cluster_settings.database_url, "checkpoints", "40001")
    text = compact(untyped(3))
    await assert_retry_later(await api.verbatim(update, text, 1))
    servers.remove_failing_trigger(cluster_settings.database_url, "checkpoints")
    # Nothing was half-applied: the same sequence number is still the next one.
    await assert_ok(await api.verbatim(update, text, 1), 204)
    await assert_ok(await api.complete(update), 204)
    assert await api.export_bytes(STACK) == text


@pytest.fixture
def own_server() -> Iterator[servers.PostgresServer]:
    server = servers.PostgresServer.start()
    try:
        yield server
    finally:
        server.stop()


async def test_a_postgres_restart_is_survived(
    own_server: servers.PostgresServer, cluster_settings: Settings
) -> None:
    name = servers.create_database(own_server.admin_url)
    settings = cluster_settings.replace(
        database_url=own_server.url(name), database_pool_min_size=3, database_pool_max_size=3
    )
    async with create_app(settings).test_app() as test_app:
        api = Api(test_app.test_client())
        await api.new_stack(STACK)
        update = await api.started(STACK)
        await assert_ok(await api.verbatim(update, compact(untyped(2)), 1), 204)
        await asyncio.to_thread(own_server.restart)
        # The CLI retries a 5xx up to 4 times, 1 s apart and more: so do we.
        text = compact(untyped(4))
        statuses = []
        for _ in range(4):
            response = await api.verbatim(update, text, 2)
            statuses.append(response.status_code)
            if response.status_code != 503:
                break
            await assert_retry_later(response)
            await asyncio.sleep(1)
        assert statuses[-1] == 204, statuses
        await assert_ok(await api.complete(update), 204)
        assert await api.export_bytes(STACK) == text
        for _ in range(5):  # every pooled connection is usable again
            assert (await api.get_stack(STACK)).status_code == 200
