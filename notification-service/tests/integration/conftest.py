"""notification-service against the real PostgreSQL, RabbitMQ and Redis, with a real SMTP server.

Each test gets its own database (the newest schema), its own exchange and queue
names (deleted afterwards with their retry and dead-letter queues), its own Redis key
prefix (its keys deleted afterwards), and an aiosmtpd SMTP server on a free port that
collects what it receives. ``service`` runs the
service as bootstrap wires it, in this event loop; ``start_process`` runs it as the
real command, for the crash test.
"""

import asyncio
import contextlib
import email
import email.message
import email.policy
from pathlib import Path

import aio_pika
import asyncpg
import httpx
import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from redis.asyncio import Redis

from devstack.compose import NativeService
from devstack.runner import NativeStack
from devstack.testing import delete_exchange, free_port, run_id, throwaway_database
from devstack.testing import eventually as devstack_eventually
from interchange_common.messaging import declare_exchange, publish
from interchange_common.migrations import upgrade
from interchange_common.servicejwt import ServiceTokenIssuer
from interchange_common.tasks import cancel_and_wait
from notification_service.bootstrap import MIGRATIONS, build, topology_of
from notification_service.config import Settings

ROOT = Path(__file__).resolve().parents[3]
SECRET = "notification-service-test-secret-" + "n" * 24
RETRY_DELAYS = (0.2, 0.4, 0.8)


@pytest.fixture
def eventually():
    """Waits for a condition with a deadline (never a fixed sleep)."""
    return devstack_eventually


class _SinkSession(SMTP):
    """aiosmtpd's session, counted by the sink while its connection is open."""

    def __init__(self, sink: "SmtpSink"):
        super().__init__(sink, hostname="sink.test")
        self._sink = sink

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._sink.sessions += 1
        self._sink.open.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        self._sink.open.discard(self)
        super().connection_lost(error)


class SmtpSink:
    """A real SMTP server (aiosmtpd) on a port of its own, in this event loop; it keeps
    every mail it accepts. Stop it to play a mail server that is down."""

    def __init__(self, *, port: int):
        self.port = port
        self.mails: list[email.message.EmailMessage] = []
        self.refuse: set[str] = set()  # recipients answered with 550
        self.defer: set[str] = set()  # recipients answered with 450 (mailbox busy: try later)
        # A session that delivered a mail answers the next with 421 (closing the
        # channel), as a server does to a client it thinks has idled too long.
        self.hang_up_kept_sessions = False
        self.sessions = 0  # connections accepted so far
        self.open: set[SMTP] = set()  # connections open now
        self._arrived = asyncio.Event()
        self._server: asyncio.Server | None = None

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]):
        if self.hang_up_kept_sessions and getattr(session, "delivered", False):
            return "421 4.4.2 sink.test closing: idle too long"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]):
        if address in self.refuse:
            return "550 5.1.1 no such mailbox"
        if address in self.defer:
            return "450 4.2.1 mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        self.mails.append(email.message_from_bytes(content, policy=email.policy.default))
        session.delivered = True  # type: ignore[attr-defined]  # the sink's own note
        self._arrived.set()
        return "250 OK"

    async def start(self):
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _SinkSession(self), "127.0.0.1", self.port)

    async def stop(self):
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def with_event(self, event_id):
        return [mail for mail in self.mails if mail["X-Interchange-Event-Id"] == str(event_id)]

    async def wait_for(self, event_id, *, count=1, timeout=15.0):
        async with asyncio.timeout(timeout):
            while len(self.with_event(event_id)) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.with_event(event_id)


@pytest.fixture
async def smtp():
    sink = SmtpSink(port=free_port())
    await sink.start()
    yield sink
    await sink.stop()


@pytest.fixture
async def database_url(infra):
    async with throwaway_database(server_url=infra.postgres_url, prefix="ic_it_notifications") as url:
        # Alembic's env.py runs its own event loop: give it a thread of its own.
        await asyncio.to_thread(upgrade, script_location=MIGRATIONS, database_url=url)
        yield url


@pytest.fixture
async def db(database_url):
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    yield conn
    await conn.close()


@pytest.fixture
async def names(infra):
    """This test's exchange and queue; deleted afterwards with the retry and dead-letter queues."""
    name = f"ic-it-notif-{run_id()}"
    yield {"EVENTS_EXCHANGE": f"{name}.events", "EVENTS_QUEUE": f"{name}.q"}
    await delete_exchange(amqp_url=infra.rabbitmq_url, exchange=f"{name}.events", queues=[f"{name}.q"])


@pytest.fixture
async def key_prefix(infra):
    """This test's Redis key prefix; every key under it is deleted afterwards."""
    prefix = f"ic-it-notif-{run_id()}"
    yield prefix
    client = Redis.from_url(infra.redis_url)
    try:
        doomed = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if doomed:
            await client.delete(*doomed)
    finally:
        await client.aclose()


@pytest.fixture
def settings_env(infra, database_url, names, smtp, key_prefix):
    """The environment the service runs with in these tests."""
    return {
        "ENVIRONMENT": "development",
        "SERVICE_JWT_SECRET": SECRET,
        "HOST": "127.0.0.1",
        "DATABASE_URL": database_url,
        "DATABASE_POOL_SIZE": "5",
        "RABBITMQ_URL": infra.rabbitmq_url,
        "RETRY_DELAYS": ",".join(map(str, RETRY_DELAYS)),
        "SMTP_URL": f"smtp://127.0.0.1:{smtp.port}",  # the form compose uses
        "SMTP_TIMEOUT_SECONDS": "5",
        "REDIS_URL": infra.redis_url,
        "REDIS_KEY_PREFIX": key_prefix,
        **names,
    }


class Bus:
    """Publishes as the producers do: to the events exchange, persistent, confirmed."""

    def __init__(self, channel, exchange):
        self.channel = channel
        self.exchange = exchange

    async def send(self, message, *, headers=None):
        await publish(
            exchange=self.exchange,
            routing_key=message.routing_key,
            body=message.bytes(),
            message_id=message.message_id,
            headers=headers,
        )

    async def queue_depth(self, name):
        declared = await self.channel.declare_queue(name, durable=True, passive=True)
        return declared.declaration_result.message_count or 0


@pytest.fixture
async def bus(infra, names):
    connection = await aio_pika.connect(infra.rabbitmq_url)
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    exchange = await declare_exchange(channel=channel, name=names["EVENTS_EXCHANGE"])
    yield Bus(channel, exchange)
    await connection.close()


class RunningService:
    def __init__(self, container, client):
        self.container = container
        self.client = client


def client_for(app, *, caller="gateway"):
    token = ServiceTokenIssuer(service=caller, secret=SECRET, ttl_seconds=300).token_for(
        audience="notification-service"
    )
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://notification-service",
        headers={"authorization": f"Bearer {token}"},
    )


@pytest.fixture
def client_as(service):
    """An HTTP client of the running service that calls as another service."""
    return lambda caller: client_for(service.container.http_app(), caller=caller)


@pytest.fixture
async def service(settings_env, bus):
    """The service as bootstrap builds it, its background work running in this loop."""
    settings = Settings(**{key.lower(): value for key, value in settings_env.items()})
    assert topology_of(settings).max_attempts == len(RETRY_DELAYS) + 1
    container = build(settings=settings)
    tasks = [asyncio.create_task(work, name=name) for name, work in container.background().items()]
    try:
        await asyncio.wait_for(container.consumer.ready.wait(), timeout=15)
        await asyncio.wait_for(container.dead_letter_consumer.ready.wait(), timeout=15)
        await asyncio.wait_for(container.live.ready.wait(), timeout=15)
        async with client_for(container.http_app()) as client:
            yield RunningService(container, client)
    finally:
        await cancel_and_wait(tasks)
        await container.close()


@pytest.fixture
def start_process(settings_env, tmp_path):
    """Starts ``notification-service serve`` as its own process (what compose runs);
    returns it once /health answers. Stops whatever is still running at the end."""
    stacks: list[NativeStack] = []

    def start(**extra_env):
        port = free_port()
        env = {**settings_env, "HTTP_PORT": str(port), **extra_env}
        service = NativeService(
            "notification-service",
            ["notification-service", "serve"],
            env,
            [],
            [],
            f"http://127.0.0.1:{port}/health",
            {},
        )
        stack = NativeStack(services=[service], bin_dir=ROOT / ".venv" / "bin", log_dir=tmp_path / f"run-{len(stacks)}")
        stacks.append(stack)
        stack.start(health_timeout=60)
        return stack

    yield start
    for stack in stacks:
        with contextlib.suppress(Exception):
            stack.stop()
