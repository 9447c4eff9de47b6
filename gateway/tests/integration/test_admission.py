"""Load shedding in the real ``gateway`` process: with ORDER_SERVICE_MAX_IN_FLIGHT=N,
N orders held by a slow order-service stand-in, k more are refused at once (503
problem, Retry-After: 1, nothing forwarded) while the N complete; the refusals are
counted in /metrics and marked in the access log. Live streams take no slot."""

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
import uuid

import httpx
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from devstack.testing import assert_problem, delete_exchange, eventually, free_port, metric

pytestmark = pytest.mark.integration
KID = "admission-key"
LIMIT = 3
EXTRA = 4
WAIT_SECONDS = 0.05


class Shop:
    """A stand-in user-service (one signing key) and order-service whose orders take
    as long as the test says: each waits until ``release`` is set."""

    def __init__(self):
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.url = ""
        self.orders: list[str] = []
        self.release = asyncio.Event()

    def token(self):
        now = int(time.time())
        claims = {
            "iss": "interchange",
            "aud": "interchange-api",
            "sub": str(uuid.uuid4()),
            "iat": now,
            "exp": now + 600,
            "roles": ["user"],
        }
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": KID})

    async def jwks(self, request):
        public = RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        return web.json_response({"keys": [{**public, "kid": KID, "alg": "RS256", "use": "sig"}]})

    async def health(self, request):
        return web.json_response({"status": "healthy"})

    async def place(self, request):
        self.orders.append(request.headers["Idempotency-Key"])
        await self.release.wait()
        return web.json_response({"id": str(uuid.uuid4())}, status=201)


@pytest.fixture(scope="module")
async def shop(serve_app):
    fake = Shop()
    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", fake.jwks)
    app.router.add_get("/health", fake.health)
    app.router.add_post("/internal/orders", fake.place)
    async with serve_app(app) as fake.url:
        yield fake
    fake.release.set()


class Gateway:
    def __init__(self, *, popen, log, url, ops_url):
        self.popen = popen
        self.log = log
        self.url = url
        self.ops_url = ops_url  # /metrics

    def access_lines(self):
        lines = (json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{"))
        return [line for line in lines if line.get("logger") == "interchange.access"]


@pytest.fixture(scope="module")
async def gateway(tmp_path_factory, shop, notifications, infra, key_prefix):
    http_port, ops_port = free_port(), free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "ENVIRONMENT": "test",
        "HOST": "127.0.0.1",
        "HTTP_PORT": str(http_port),
        "HTTPS_PORT": str(free_port()),
        "OPS_PORT": str(ops_port),
        "SERVICE_JWT_SECRET": secrets.token_urlsafe(48),
        "REDIS_URL": infra.redis_url,
        "REDIS_KEY_PREFIX": key_prefix,
        "RABBITMQ_URL": infra.rabbitmq_url,
        "EVENTS_EXCHANGE": f"{key_prefix}.admission.events",
        "EVENTS_QUEUE": f"{key_prefix}.admission.gateway",
        "USER_SERVICE_URL": shop.url,
        "ORDER_SERVICE_URL": shop.url,
        "NOTIFICATION_SERVICE_URL": notifications.url,
        "ORDER_SERVICE_MAX_IN_FLIGHT": str(LIMIT),
        # One slot: the event streams below would take it, if they took any.
        "NOTIFICATION_SERVICE_MAX_IN_FLIGHT": "1",
        "IN_FLIGHT_WAIT_SECONDS": str(WAIT_SECONDS),
    }
    log = tmp_path_factory.mktemp("gateway-admission-log") / "gateway.log"
    with log.open("w") as out:
        popen = subprocess.Popen([sys.executable, "-m", "gateway", "serve"], env=env, stdout=out, stderr=out)
    process = Gateway(popen=popen, log=log, url=f"http://127.0.0.1:{http_port}", ops_url=f"http://127.0.0.1:{ops_port}")
    async with httpx.AsyncClient(base_url=process.url) as probe:

        async def listening():
            if popen.poll() is not None:
                raise AssertionError(f"the gateway exited:\n{log.read_text()}")
            try:
                return (await probe.get("/health/live")).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(listening, timeout=30, what="the gateway to listen")
    yield process
    popen.kill()
    popen.wait(timeout=10)
    await delete_exchange(amqp_url=infra.rabbitmq_url, exchange=env["EVENTS_EXCHANGE"], queues=[env["EVENTS_QUEUE"]])


async def test_past_the_limit_orders_are_refused_at_once_while_those_let_in_complete(gateway, shop):
    headers = {"Authorization": f"Bearer {shop.token()}"}
    shed_before = await asyncio.to_thread(
        metric, gateway.ops_url, "gateway_shed_requests_total", {"upstream": "order-service"}
    )
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:

        async def place(key):
            started = time.monotonic()
            response = await client.post("/api/orders", json={"items": []}, headers={**headers, "Idempotency-Key": key})
            return response, time.monotonic() - started

        async def all_held():
            return len(shop.orders) == LIMIT

        held = [asyncio.create_task(place(f"held-{n}")) for n in range(LIMIT)]
        await eventually(all_held, what=f"{LIMIT} orders upstream")
        # The upstream still holds every order let in: the rest are answered without it.
        async with asyncio.timeout(10):
            refusals = await asyncio.gather(*(place(f"extra-{n}") for n in range(EXTRA)))
        assert not any(task.done() for task in held)
        for response, seconds in refusals:
            problem = assert_problem(response, 503)
            assert problem["detail"] == "order-service is at capacity; try again shortly"
            assert response.headers["retry-after"] == "1"
            # The wait is 50 ms; the rest is room for a busy machine, far below any upstream's.
            assert seconds < 1.0
        assert sorted(shop.orders) == sorted(f"held-{n}" for n in range(LIMIT))  # nothing else was forwarded
        shop.release.set()
        completed = await asyncio.gather(*held)
    assert [response.status_code for response, _ in completed] == [201] * LIMIT
    shed_after = await asyncio.to_thread(
        metric, gateway.ops_url, "gateway_shed_requests_total", {"upstream": "order-service"}
    )
    assert (shed_after or 0) - (shed_before or 0) == EXTRA
    shed_lines = [line for line in gateway.access_lines() if line.get("shed") == "order-service"]
    assert len(shed_lines) == EXTRA
    assert {(line["status"], line["path"]) for line in shed_lines} == {(503, "/api/orders")}


async def test_event_streams_take_no_slot_of_their_upstream(gateway, shop, stand_in):
    headers = {"Authorization": f"Bearer {shop.token()}", "Accept": "text/event-stream"}
    async with (
        httpx.AsyncClient(base_url=gateway.url, timeout=30) as client,
        client.stream("GET", "/api/events", headers=headers) as first,
        client.stream("GET", "/api/events", headers=headers) as second,
    ):
        for stream in (first, second):
            assert stream.status_code == 200
            assert b"id: 1" in await asyncio.wait_for(anext(stream.aiter_raw()), timeout=10)
        # Two streams open, and a request to the same upstream still gets its one slot
        # (the stand-in serves no such path: its 404 comes back, not a 503).
        listed = await client.get("/api/notifications", headers={"Authorization": headers["Authorization"]})
        assert listed.status_code == 404
        stand_in.release.set()
