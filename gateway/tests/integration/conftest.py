"""A real Redis (own key prefix per run) and a real upstream HTTP server on loopback."""

import asyncio
import uuid

import pytest
from aiohttp import web
from redis.asyncio import Redis

from devstack.testing import free_port, run_id
from gateway.adapters.ratelimiter import RedisRateLimiter


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

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append(request)
        self.bodies.append(await request.read())
        await asyncio.sleep(self.delay)
        if request.path == "/.well-known/jwks.json":
            return web.json_response({"keys": []})
        return web.json_response(
            {"path": request.path, "query": request.query_string},
            status=201 if request.method == "POST" else 200,
            headers={"ETag": '"7"', "X-Internal": "secret-ish"},
        )


@pytest.fixture(scope="session")
async def upstream():
    fake = Upstream()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    fake.url = f"http://127.0.0.1:{port}"
    yield fake
    await runner.cleanup()


@pytest.fixture
def user_id():
    return uuid.uuid4()
