"""Fixtures of the API suite, built on the shared ``app``/``client`` fixtures."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest
from quart.typing import TestAppProtocol, TestClientProtocol

from procella import create_app
from procella.auth.models import Role
from procella.settings import Settings
from tests.helpers import Api, make_token


@pytest.fixture
def api(client: TestClientProtocol) -> Api:
    """The protocol client, as the site administrator."""
    return Api(client)


@pytest.fixture
def as_role(app: TestAppProtocol, client: TestClientProtocol) -> Callable[..., Any]:
    """``await as_role(org, Role.X, login)``: an ``Api`` with a fresh token of that role."""

    async def make(org: str, role: Role, login: str) -> Api:
        return Api(client, await make_token(app, org, role, login))

    return make


@pytest.fixture
def custom_app(
    settings: Settings,
) -> Callable[..., AbstractAsyncContextManager[tuple[TestAppProtocol, Api]]]:
    """``async with custom_app(max_request_bytes=...) as (app, api)``: the same deployment
    kind as ``settings`` with some settings changed."""

    @asynccontextmanager
    async def run(**changes: Any) -> AsyncIterator[tuple[TestAppProtocol, Api]]:
        async with create_app(settings.replace(**changes)).test_app() as test_app:
            yield test_app, Api(test_app.test_client())

    return run
