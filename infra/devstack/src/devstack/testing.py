"""Helpers the test suites share: free ports, waiting with a deadline, throwaway
databases and exchanges, a private RabbitMQ node or Redis server that a test may
stop, and a gRPC call whose request bytes do not decode."""

import asyncio
import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import grpc
import httpx
from prometheus_client.parser import text_string_to_metric_families

from devstack.compose import default_ports, load_compose
from devstack.infra import Infra, create_databases, drop_databases
from devstack.secrets import ensure_dev_secrets
from devstack.stack import Stack, StackOptions

T = TypeVar("T")


_MAX_RETRY_QUEUES = 10  # a consumer has at most this many retry delays in tests


_LISTEN_PORTS = range(20000, 32768)  # below Linux's default ephemeral range
_handed_out: set[int] = set()


def _ephemeral_ports() -> range:
    """The ports the kernel picks for outgoing connections (Linux; the default elsewhere)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    except (OSError, ValueError):
        return range(32768, 61000)
    return range(int(low), int(high) + 1)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on, for a server started later.

    It is taken outside the ephemeral range: a port the kernel hands out may meanwhile
    become the local end of some outgoing connection (every service opens dozens while
    the stack starts), and the server's bind then fails. Ports are random, so that
    concurrent runs rarely meet, and never the same twice in one process."""
    ephemeral = _ephemeral_ports()
    candidates = [port for port in _LISTEN_PORTS if port not in ephemeral and port not in _handed_out]
    for _ in range(100):
        if not candidates:
            break
        port = secrets.choice(candidates)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_id() -> str:
    """A short random id that names one test run's databases, keys and queues."""
    return secrets.token_hex(4)


def metric(url: str, name: str, labels: Mapping[str, str]) -> float | None:
    """One sample from the /metrics of the service at ``url`` (the first whose labels
    include ``labels``), or None when it has none such."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and all(found.labels.get(key) == value for key, value in labels.items()):
                return float(found.value)
    return None


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """``response`` is an RFC 9457 problem with ``status`` that names its request id
    and shows no traceback; its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text
    return body


def accepts(host: str, port: int) -> bool:
    """Something accepts TCP connections on ``host:port``."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        return True
    return False


def wait_for(condition: Callable[[], T | None], *, timeout: float, interval: float = 0.05, what: str = "") -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(interval)


async def eventually(
    probe: Callable[[], Awaitable[T | None]],
    *,
    timeout: float = 15.0,  # noqa: ASYNC109  # the same call as wait_for, for async probes
    interval: float = 0.05,
    what: str = "",
) -> T:
    """``wait_for`` for async probes: await ``probe()`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what or probe}")
        await asyncio.sleep(interval)


UNDECODABLE = b"\xff\xff\xff"  # a field tag whose varint never ends


def _as_is(data: bytes) -> bytes:
    return data


async def undecodable_call(
    channel: grpc.aio.Channel, *, kind: str, method: str, metadata: Sequence[tuple[str, str]] | None = None
) -> grpc.aio.AioRpcError:
    """Sends UNDECODABLE as the request of ``method`` (``kind``: unary_unary,
    unary_stream or stream_stream) and returns the error the call ends with; a call
    that succeeds is an AssertionError."""
    raw = {"request_serializer": _as_is, "response_deserializer": _as_is}
    try:
        if kind == "unary_unary":
            await channel.unary_unary(method, **raw)(UNDECODABLE, metadata=metadata, timeout=5)
        elif kind == "unary_stream":
            async for _ in channel.unary_stream(method, **raw)(UNDECODABLE, metadata=metadata, timeout=5):
                pass
        else:
            async for _ in channel.stream_stream(method, **raw)(iter([UNDECODABLE]), metadata=metadata, timeout=5):
                pass
    except grpc.aio.AioRpcError as e:
        return e
    raise AssertionError(f"{method} answered undecodable bytes")


def gateway_client(base_url: str, *, timeout: float) -> httpx.Client:
    """A client of the gateway that lets a connection go once idle for 2 s. The
    gateway closes one idle for 5 s (REQUEST_HEAD_TIMEOUT_SECONDS); httpx keeps them 5 s
    too, so a request sent on one at that moment got no answer ("Server disconnected
    without sending a response"), and a POST is not sent again."""
    return httpx.Client(base_url=base_url, timeout=timeout, limits=httpx.Limits(keepalive_expiry=2.0))


async def delete_exchange(*, amqp_url: str, exchange: str, queues: Iterable[str] = ()) -> None:
    """Remove a test run's events exchange, with its alternate exchange and queue,
    and the run's consumer ``queues`` with their retry and dead-letter queues."""
    names = [f"{exchange}.unrouted"]
    for queue in queues:
        names += [queue, f"{queue}.dead"]
        for n in range(1, _MAX_RETRY_QUEUES + 1):  # the quorum retry queues, and the classic ones of before
            names += [f"{queue}.retry.{n}.quorum", f"{queue}.retry.{n}"]
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        for name in names:
            await channel.queue_delete(name)  # deleting a queue that is not there is fine
        await channel.exchange_delete(exchange)
        await channel.exchange_delete(f"{exchange}.unrouted")
    finally:
        await connection.close()


@asynccontextmanager
async def throwaway_database(*, server_url: str, prefix: str) -> AsyncIterator[str]:
    """A new, empty database for one test run; yields its SQLAlchemy asyncpg URL, drops it after."""
    name = f"{prefix}_{run_id()}"
    await create_databases(server_url=server_url, names={name})
    parts = urlsplit(server_url)
    try:
        yield urlunsplit(("postgresql+asyncpg", parts.netloc, f"/{name}", "", ""))
    finally:
        await drop_databases(server_url=server_url, names={name})


class PrivateRabbitMQ:
    """A RabbitMQ node of a test's own, on free ports, that the test may stop and
    start again (its data directory survives restarts). The shared broker is never
    touched. Needs Debian's rabbitmq-server and root (the server runs as rabbitmq)."""

    def __init__(self, *, name: str) -> None:
        self.node = f"{name}@localhost"
        self.port = free_port()
        self._dist_port = free_port()
        self._dir = Path(tempfile.mkdtemp(prefix=f"{name}-"))
        shutil.chown(self._dir, "rabbitmq", "rabbitmq")
        (self._dir / "rabbitmq.conf").write_text(f"listeners.tcp.default = 127.0.0.1:{self.port}\n")
        (self._dir / "enabled_plugins").write_text("[].\n")
        (self._dir / "rabbitmq-env.conf").write_text("")
        for path in self._dir.iterdir():
            shutil.chown(path, "rabbitmq", "rabbitmq")
        self._process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def unavailable_because() -> str | None:
        if shutil.which("rabbitmq-server") is None:
            return "rabbitmq-server is not installed (Debian: apt-get install rabbitmq-server)"
        if os.geteuid() != 0:
            return "starting a private RabbitMQ node needs root"
        return None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def start(self, *, timeout: float = 60) -> None:
        env = {
            **os.environ,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_DIST_PORT": str(self._dist_port),
            "RABBITMQ_CONFIG_FILE": str(self._dir / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(self._dir / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self._dir / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self._dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self._dir / "log"),
            "RABBITMQ_PID_FILE": str(self._dir / "pid"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }
        self._process = subprocess.Popen(
            ["rabbitmq-server"], env=env, cwd=self._dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for(self._answers, timeout=timeout, what=f"RabbitMQ node {self.node}")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        subprocess.run(["rabbitmqctl", "-n", self.node, "stop"], capture_output=True, check=False, timeout=60)
        if self._process is not None:
            self._process.wait(timeout=60)
            self._process = None

    def remove(self) -> None:
        if self._process is not None:
            self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


class PrivateRedis:
    """A redis-server of a test's own on a free port, that the test may stop and start
    again. Nothing is persisted: a restart comes back empty, like a cache that lost its
    memory. The shared Redis is never touched."""

    def __init__(self) -> None:
        self.port = free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="ic-redis-"))
        self._process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def unavailable_because() -> str | None:
        if shutil.which("redis-server") is None:
            return "redis-server is not installed (Debian: apt-get install redis-server)"
        return None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *, timeout: float = 15) -> None:
        self._process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=self._dir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self._answers, timeout=timeout, what=f"redis-server on port {self.port}")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, *, timeout: float = 15) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=timeout)
        self._process = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


def _isolated_options(
    *,
    root: Path,
    run: str,
    purpose: str,
    log_dir: Path | None = None,
    only: frozenset[str] | None = None,
    leave_out: frozenset[str] = frozenset(),
    env_overrides: Mapping[str, Mapping[str, str]] | None = None,
) -> StackOptions:
    """A native stack that collides with nothing: free ports, databases named after
    the run, .env.example's development values and no variable from this shell."""
    env_example = root / ".env.example"
    document = load_compose(compose_file=root / "docker-compose.yml", env_file=env_example, environ={})
    scratch = log_dir or Path(tempfile.mkdtemp(prefix=f"ic-{purpose}-{run}-"))
    return StackOptions(
        root=root,
        env_file=env_example,
        ports={key: free_port() for key in default_ports(document)},
        database_name=lambda name: f"ic_{purpose}_{run}_{name}",
        env_overrides=env_overrides or {},
        log_dir=log_dir,
        environ={},
        only=only,
        leave_out=leave_out,
        mail_port=free_port(),
        mail_dir=scratch / "mail",
        otlp_port=free_port(),
        spans_file=scratch / "traces.jsonl",
    )


@contextmanager
def isolated_stack(
    *,
    root: Path,
    infra: Infra,
    run: str,
    purpose: str,
    log_dir: Path | None = None,
    only: frozenset[str] | None = None,
    leave_out: frozenset[str] = frozenset(),
    env_overrides: Mapping[str, Mapping[str, str]] | None = None,
    health_timeout: float = 90,
) -> Iterator[Stack]:
    """A started native stack that shares nothing with anything else: free ports,
    databases named after the run, .env.example's values and no variable from this
    shell; services that publish events do so to this run's own exchange,
    ``ic-<purpose>-<run>.events``, and consumers read their own queues; Redis keys and
    channels start with ``ic-<purpose>-<run>``; mail goes to
    the run's own SMTP sink (``stack.mail``). Afterwards its processes are stopped,
    its databases dropped and its exchange deleted, whatever happened."""
    ensure_dev_secrets(root=root)
    options = _isolated_options(
        root=root,
        run=run,
        purpose=purpose,
        log_dir=log_dir,
        only=only,
        leave_out=leave_out,
        env_overrides=env_overrides,
    )
    stack = Stack.prepare(options=options, infra=infra)
    exchange = f"ic-{purpose}-{run}.events"
    queues = set()
    for service in stack.services:
        if "EVENTS_EXCHANGE" in service.environment:
            service.environment["EVENTS_EXCHANGE"] = exchange
        if "EVENTS_QUEUE" in service.environment:
            queue = f"ic-{purpose}-{run}.{service.environment['EVENTS_QUEUE']}"
            service.environment["EVENTS_QUEUE"] = queue
            queues.add(queue)
        if "REDIS_URL" in service.environment:
            service.environment["REDIS_KEY_PREFIX"] = f"ic-{purpose}-{run}"
    try:
        stack.start(health_timeout=health_timeout)
        yield stack
    finally:
        stack.stop(drop_databases_too=True)
        asyncio.run(delete_exchange(amqp_url=infra.rabbitmq_url, exchange=exchange, queues=queues))
