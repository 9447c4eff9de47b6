"""Fixtures every test suite may use (registered with pytest through an entry point)."""

from collections.abc import Iterator

import pytest

from devstack.infra import Infra, ensure_infra
from devstack.testing import PrivateRedis


@pytest.fixture(scope="session")
def infra() -> Infra:
    """The PostgreSQL, Redis and RabbitMQ servers of this machine (see devstack.infra)."""
    return ensure_infra()


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A redis-server of the test's own, started; the test may stop and start it."""
    reason = PrivateRedis.unavailable_because()
    if reason is not None:
        pytest.fail(reason)  # redis-server is part of this machine's set-up (DESIGN.md)
    server = PrivateRedis()
    server.start()
    yield server
    server.remove()
