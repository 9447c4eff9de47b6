"""A real Redis (own key prefix per run) and real upstream HTTP servers on loopback."""

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from redis.asyncio import Connection, ConnectionPool, Redis

from devstack.testing import free_port, run_id
from gateway.adapters.ratelimiter import RedisRateLimiter
from interchange_common.balancing import Balancer
from interchange_common.discovery import StaticDiscovery


@pytest.fixture(scope="session")
def key_prefix():
    return f"ic-it-{run_id()}"


@pytest.fixture(scope="session")
async def redis(infra, key_prefix):
    client = Redis.from_url(infra.redis_url)
    yield client
    keys = [key async for key in client.scan_iter(match=f"*{key_prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


class RoundTrips:
    """What a Redis client sent: one packed send is one round trip (a pipeline's
    commands go in one send, a script call is one command)."""

    def __init__(self):
        self.count = 0


@pytest.fixture
async def counted_redis(infra):
    """A client of the shared Redis whose round trips are counted: ``(client, trips)``."""
    trips = RoundTrips()

    class CountingConnection(Connection):
        async def send_packed_command(self, command, check_health=True):
            trips.count += 1
            await super().send_packed_command(command, check_health)

    pool = ConnectionPool.from_url(infra.redis_url, connection_class=CountingConnection)
    client = Redis(connection_pool=pool)
    yield client, trips
    await client.aclose()
    await pool.aclose()


@pytest.fixture(scope="session")
def limiter(redis, key_prefix):
    return RedisRateLimiter(redis=redis, key_prefix=key_prefix)


class Upstream:
    """A stand-in user-service: records what reached it and answers as told."""

    def __init__(self):
        self.seen: list[web.Request] = []
        self.bodies: list[bytes] = []
        self.delay = 0.0
        self.url = ""
        # What its 429 (at /internal/things/limited) says: a limit that is not the gateway's.
        self.limited_headers = {
            "Retry-After": "9",
            "RateLimit-Limit": "2",
            "RateLimit-Remaining": "0",
            "RateLimit-Reset": "9",
        }

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append(request)
        self.bodies.append(await request.read())
        await asyncio.sleep(self.delay)
        if request.path == "/.well-known/jwks.json":
            return web.json_response({"keys": []})
        if request.path == "/missing":
            return web.json_response({"detail": "not found"}, status=404)
        if request.path == "/internal/things/limited":
            return web.json_response({"detail": "slow down"}, status=429, headers=self.limited_headers)
        return web.json_response(
            {"path": request.path, "query": request.query_string},
            status=201 if request.method == "POST" else 200,
            headers={"ETag": '"7"', "X-Internal": "secret-ish"},
        )


@contextlib.asynccontextmanager
async def serving(app: web.Application, *, shutdown_timeout: float = 60.0) -> AsyncIterator[str]:
    """``app`` on a free loopback port; yields its base URL."""
    runner = web.AppRunner(app, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture(scope="session")
def serve_app():
    """``serving``, for the test modules' own stand-ins."""
    return serving


@pytest.fixture(scope="session")
async def upstream():
    fake = Upstream()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    async with serving(app) as fake.url:
        yield fake


@pytest.fixture
def user_id():
    return uuid.uuid4()


class Notifications:
    """A stand-in notification-service on a real socket: /internal/events sends one
    event and then waits until the test releases it; /internal/ws greets, echoes,
    closes or drops on command."""

    def __init__(self):
        self.url = ""
        self.events_requests: list[web.Request] = []
        self.socket_requests: list[web.Request] = []
        self.health_methods: list[str] = []
        self.release = asyncio.Event()
        self.finished = asyncio.Event()
        self.die_mid_stream = False
        self.refuse_status: int | None = None
        self.refuse_headers: dict[str, str] = {}
        self.upstream_closed = asyncio.Event()
        self.closed_code: int | None = None

    def reset(self):
        self.release = asyncio.Event()
        self.finished = asyncio.Event()
        self.die_mid_stream = False
        self.refuse_status = None
        self.refuse_headers = {}
        self.upstream_closed = asyncio.Event()
        self.closed_code = None

    async def health(self, request: web.Request) -> web.Response:
        self.health_methods.append(request.method)
        return web.json_response({"status": "healthy"})

    async def events(self, request: web.Request) -> web.StreamResponse:
        self.events_requests.append(request)
        if self.refuse_status is not None:
            return web.json_response(
                {"type": "about:blank", "status": self.refuse_status, "detail": "refused by the stand-in"},
                status=self.refuse_status,
                content_type="application/problem+json",
                headers=self.refuse_headers,
            )
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        await response.write(b'id: 1\ndata: {"n": 1}\n\n')
        if self.die_mid_stream:
            assert request.transport is not None
            request.transport.abort()
            return response
        await self.release.wait()
        try:
            await response.write(b'id: 2\ndata: {"n": 2}\n\n')
            await response.write_eof()
        except ConnectionResetError:
            return response  # the gateway let go first
        self.finished.set()
        return response

    async def socket(self, request: web.Request) -> web.StreamResponse:
        self.socket_requests.append(request)
        if self.refuse_status is not None:
            return web.json_response({"detail": "refused"}, status=self.refuse_status)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"type": "welcome", "user": request.headers.get("X-Actor-Id")})
        async for message in ws:
            text = message.data
            if text.startswith("close:"):
                _, code, reason = text.split(":", 2)
                await ws.close(code=int(code), message=reason.encode())
                break
            if text == "drop":
                assert request.transport is not None
                request.transport.abort()
                break
            await ws.send_json({"type": "echo", "message": text})
        self.closed_code = ws.close_code
        self.upstream_closed.set()
        return ws


@pytest.fixture(scope="session")
async def notifications():
    fake = Notifications()
    app = web.Application()
    app.router.add_route("*", "/health", fake.health)
    app.router.add_get("/internal/events", fake.events)
    app.router.add_get("/internal/ws", fake.socket)
    async with serving(app, shutdown_timeout=1) as fake.url:
        yield fake


@pytest.fixture
def stand_in(notifications):
    notifications.reset()
    yield notifications
    notifications.release.set()


def _balancer_over(*urls: str, service: str = "upstream") -> Balancer:
    order = itertools.count()
    return Balancer(
        service=service,
        discovery=StaticDiscovery(urls={service: list(urls)}),
        rng=lambda: next(order) / 1e9,
    )


@pytest.fixture(scope="session")
def balancer_over():
    """``balancer_over(*urls)``: a balancer over ``urls`` (static discovery) that tries
    them in the order listed, ejected ones last, so a test decides which instance a
    call meets first."""
    return _balancer_over
