"""Fixtures of the property suite, built on the shared ``app``/``client`` fixtures."""

from __future__ import annotations

import pytest
from quart.typing import TestClientProtocol

from tests.helpers import Api


@pytest.fixture
def api(client: TestClientProtocol) -> Api:
    """The protocol client, as the site administrator."""
    return Api(client)
