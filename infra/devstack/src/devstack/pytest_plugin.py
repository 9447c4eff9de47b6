"""Fixtures every test suite may use (registered with pytest through an entry point)."""

import pytest

from devstack.infra import Infra, ensure_infra


@pytest.fixture(scope="session")
def infra() -> Infra:
    """The PostgreSQL, Redis and RabbitMQ servers of this machine (see devstack.infra)."""
    return ensure_infra()
