"""Fixtures every test suite may use (registered with pytest through an entry point).

infra               this machine's PostgreSQL, Redis and RabbitMQ
private_redis       a redis-server of the test's own, which it may stop
user_service_grpc   user-service alone, natively on free ports: its gRPC address
event_store_grpc    the event store alone, likewise
"""

from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.infra import Infra, ensure_infra
from devstack.testing import PrivateRedis, isolated_stack, run_id


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


def _repository(start: Path) -> Path:
    """The checkout a suite runs in: each package's suite has the package as rootdir."""
    for folder in (start, *start.parents):
        if (folder / "docker-compose.yml").is_file():
            return folder
    raise pytest.UsageError(f"no docker-compose.yml in {start} or above it")


def _alone(
    request: pytest.FixtureRequest, infra: Infra, tmp_path_factory: pytest.TempPathFactory, *, service: str, port: int
) -> Iterator[str]:
    with isolated_stack(
        root=_repository(request.config.rootpath),
        infra=infra,
        run=run_id(),
        purpose="it_alone",
        log_dir=tmp_path_factory.mktemp(service),
        only=frozenset({service}),
    ) as stack:
        yield f"127.0.0.1:{stack.port(service, port)}"


@pytest.fixture(scope="session")
def user_service_grpc(
    request: pytest.FixtureRequest, infra: Infra, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """user-service, its compose service run alone with its own database: host:port of its gRPC API."""
    yield from _alone(request, infra, tmp_path_factory, service="user-service", port=50051)


@pytest.fixture(scope="session")
def event_store_grpc(
    request: pytest.FixtureRequest, infra: Infra, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The event store run alone, likewise: host:port of its gRPC API."""
    yield from _alone(request, infra, tmp_path_factory, service="event-store", port=50054)
