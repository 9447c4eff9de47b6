"""A throwaway database with the event store's schema, and storage on it with its
sequencer and change listener running, for this test session."""

import asyncio
import signal
from pathlib import Path

import pytest

from devstack.compose import NativeService
from devstack.runner import NativeStack
from devstack.testing import delete_exchange, free_port, run_id, throwaway_database
from event_store.adapters.memory import InMemoryEventStorage
from event_store.bootstrap import MIGRATIONS, build
from event_store.config import Settings
from interchange_common.migrations import upgrade
from interchange_common.servicejwt import ServiceTokenIssuer
from interchange_common.tasks import cancel_and_wait


@pytest.fixture(scope="session")
async def database_url(infra):
    async with throwaway_database(server_url=infra.postgres_url, prefix="ic_it_events") as url:
        await asyncio.to_thread(upgrade, script_location=MIGRATIONS, database_url=url)
        yield url


SECRET = "event-store-test-secret-" + "k" * 24


@pytest.fixture(scope="session")
def settings_on(infra):
    """Settings of an event-store on a given database, for tests that build one in this process."""

    def settings(*, database_url, pool_size):
        return Settings(
            environment="development",
            service_jwt_secret=SECRET,
            database_url=database_url,
            database_pool_size=pool_size,
            rabbitmq_url=infra.rabbitmq_url,
        )

    return settings


@pytest.fixture(scope="session")
async def postgres(database_url, settings_on):
    container = await build(settings=settings_on(database_url=database_url, pool_size=40))
    tasks = [asyncio.create_task(container.sequencer.run()), asyncio.create_task(container.listener.run())]
    yield container
    await cancel_and_wait(tasks)
    await container.close()


ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def exchange(infra):
    """This run's own events exchange; removed with its queue at the end."""
    name = f"ic-it-{run_id()}.events"
    yield name
    asyncio.run(delete_exchange(amqp_url=infra.rabbitmq_url, exchange=name))


class ServiceProcess:
    """event-store as a real process (the command compose runs) on free ports."""

    def __init__(self, *, database_url, amqp_url, exchange, log_dir):
        self.http_port, self.grpc_port = free_port(), free_port()
        env = {
            "ENVIRONMENT": "development",
            "SERVICE_JWT_SECRET": SECRET,
            "HOST": "127.0.0.1",
            "HTTP_PORT": str(self.http_port),
            "GRPC_PORT": str(self.grpc_port),
            "DATABASE_URL": database_url,
            "RABBITMQ_URL": amqp_url,
            "EVENTS_EXCHANGE": exchange,
        }
        service = NativeService(
            "event-store", ["event-store", "serve"], env, [], [], f"http://127.0.0.1:{self.http_port}/health", {}
        )
        self.stack = NativeStack(services=[service], bin_dir=ROOT / ".venv" / "bin", log_dir=log_dir)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.http_port}"

    def start(self):
        self.stack.start(health_timeout=60)

    def kill(self):
        process = self.stack.running[0].process
        process.send_signal(signal.SIGKILL)
        process.wait()
        self.stack.stop()


@pytest.fixture(scope="session")
def start_service(database_url, infra, exchange, tmp_path_factory):
    """Starts event-store processes (on this session's database and exchange unless
    told otherwise); stops whatever is still running at the end."""
    started = []

    def start(*, on_database=None, on_exchange=None, on_broker=None):
        service = ServiceProcess(
            database_url=on_database or database_url,
            amqp_url=on_broker or infra.rabbitmq_url,
            exchange=on_exchange or exchange,
            log_dir=tmp_path_factory.mktemp("event-store-logs"),
        )
        service.start()
        started.append(service)
        return service

    yield start
    for service in started:
        service.stack.stop()


@pytest.fixture(scope="session")
def service(start_service):
    return start_service()


@pytest.fixture(scope="session")
def issuer():
    """Tokens of a calling service (order-service) that the test service accepts."""
    return ServiceTokenIssuer(service="order-service", secret=SECRET, ttl_seconds=600)


@pytest.fixture(scope="session")
def service_token(issuer):
    return issuer.token_for(audience="event-store")


@pytest.fixture(params=["memory", "postgres"])
def storage(request):
    """The contract suite runs once per backend."""
    if request.param == "memory":
        return InMemoryEventStorage()
    return request.getfixturevalue("postgres").storage
