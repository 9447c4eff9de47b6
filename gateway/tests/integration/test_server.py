"""The real ``gateway`` process: HTTP/2 over TLS (ALPN) with the development certificate,
and in the clear (h2c), HTTP/1.1, the page, a ticket and an SSE stream over HTTP/2,
and SIGTERM ending live connections at once. Upstreams are stand-ins on real sockets."""

import asyncio
import os
import secrets
import signal
import ssl
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

from devstack.secrets import write_dev_certificate
from devstack.testing import delete_exchange, eventually, free_port

pytestmark = pytest.mark.integration
KID = "test-key"


class Users:
    """A stand-in user-service that publishes one signing key."""

    def __init__(self):
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.url = ""

    def token(self, *, user_id, lifetime=600):
        now = int(time.time())
        claims = {
            "iss": "interchange",
            "aud": "interchange-api",
            "sub": str(user_id),
            "iat": now,
            "exp": now + lifetime,
            "roles": ["user"],
        }
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": KID})

    async def jwks(self, request):
        public = RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        return web.json_response({"keys": [{**public, "kid": KID, "alg": "RS256", "use": "sig"}]})

    async def health(self, request):
        return web.json_response({"status": "healthy"})


@pytest.fixture(scope="module")
async def users(serve_app):
    fake = Users()
    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", fake.jwks)
    app.router.add_get("/health", fake.health)
    async with serve_app(app) as fake.url:
        yield fake


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """The development certificate, made as set-up makes it (devstack secrets)."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "tls-cert.pem", directory / "tls-key.pem"
    write_dev_certificate(cert_path=cert, key_path=key)
    return cert, key


class Process:
    def __init__(self, *, popen, log, http_url, https_url, cafile, ops_url):
        self.popen = popen
        self.log = log
        self.http_url = http_url
        self.https_url = https_url
        self.cafile = cafile
        self.ops_url = ops_url  # the detailed /health and /metrics

    def output(self):
        return self.log.read_text()


@pytest.fixture(scope="module")
async def gateway(tmp_path_factory, certificate, users, notifications, infra, key_prefix):
    cert_file, key_file = certificate
    http_port, https_port, ops_port = free_port(), free_port(), free_port()
    dead = f"http://127.0.0.1:{free_port()}"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "ENVIRONMENT": "test",
        "LOG_LEVEL": "DEBUG",
        "HOST": "127.0.0.1",
        "HTTP_PORT": str(http_port),
        "HTTPS_PORT": str(https_port),
        "OPS_PORT": str(ops_port),
        "TLS_CERT_FILE": str(cert_file),
        "TLS_KEY_FILE": str(key_file),
        "SERVICE_JWT_SECRET": secrets.token_urlsafe(48),
        "REDIS_URL": infra.redis_url,
        "REDIS_KEY_PREFIX": key_prefix,
        # The run's own exchange and queue on the shared broker, removed afterwards.
        "RABBITMQ_URL": infra.rabbitmq_url,
        "EVENTS_EXCHANGE": f"{key_prefix}.events",
        "EVENTS_QUEUE": f"{key_prefix}.gateway",
        "USER_SERVICE_URL": users.url,
        "ORDER_SERVICE_URL": users.url,
        "NOTIFICATION_SERVICE_URL": f"{dead}, {notifications.url}",
        "WS_ALLOWED_ORIGINS": '["https://app.example.com"]',
        # Long: the SIGTERM test shows that live connections do not wait for it.
        "SHUTDOWN_GRACE_SECONDS": "30",
    }
    log = tmp_path_factory.mktemp("gateway-log") / "gateway.log"
    with log.open("w") as out:
        popen = subprocess.Popen([sys.executable, "-m", "gateway", "serve"], env=env, stdout=out, stderr=out)
    process = Process(
        popen=popen,
        log=log,
        http_url=f"http://127.0.0.1:{http_port}",
        https_url=f"https://127.0.0.1:{https_port}",
        cafile=str(cert_file),
        ops_url=f"http://127.0.0.1:{ops_port}",
    )
    async with httpx.AsyncClient(verify=tls_context(process)) as probe:

        async def both_listen():
            if popen.poll() is not None:
                raise AssertionError(f"the gateway exited:\n{process.output()}")
            try:
                plain = await probe.get(f"{process.http_url}/health/live")
                secure = await probe.get(f"{process.https_url}/health/live")
            except httpx.TransportError:
                return False
            return plain.status_code == secure.status_code == 200

        await eventually(both_listen, timeout=30, what="the gateway to listen on both ports")
    yield process
    if popen.poll() is None:
        popen.kill()
        popen.wait(timeout=10)
    await delete_exchange(amqp_url=infra.rabbitmq_url, exchange=env["EVENTS_EXCHANGE"], queues=[env["EVENTS_QUEUE"]])


def tls_context(process):
    return ssl.create_default_context(cafile=process.cafile)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_tls_speaks_http2_by_alpn_with_the_dev_certificate(gateway, host):
    url = gateway.https_url.replace("127.0.0.1", host)
    async with httpx.AsyncClient(http2=True, verify=tls_context(gateway)) as client:
        response = await client.get(f"{url}/health/live")
    assert response.status_code == 200
    assert response.http_version == "HTTP/2"


async def test_tls_still_speaks_http1(gateway):
    async with httpx.AsyncClient(verify=tls_context(gateway)) as client:
        response = await client.get(f"{gateway.https_url}/health/live")
    assert response.status_code == 200
    assert response.http_version == "HTTP/1.1"


async def test_the_http_port_speaks_h2c_by_prior_knowledge_and_http1(gateway):
    async with httpx.AsyncClient(http1=False, http2=True) as client:
        h2c = await client.get(f"{gateway.http_url}/health/live")
    async with httpx.AsyncClient() as client:
        http1 = await client.get(f"{gateway.http_url}/health/live")
    assert (h2c.status_code, h2c.http_version) == (200, "HTTP/2")
    assert (http1.status_code, http1.http_version) == (200, "HTTP/1.1")


async def test_the_page_and_its_files(gateway):
    async with httpx.AsyncClient(http2=True, verify=tls_context(gateway)) as client:
        page = await client.get(f"{gateway.https_url}/")
        script = await client.get(f"{gateway.https_url}/static/app.js")
        style = await client.get(f"{gateway.https_url}/static/style.css")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["link"] == "</static/app.js>; rel=preload; as=script"
    assert "/static/app.js" in page.text
    assert script.status_code == style.status_code == 200
    assert "javascript" in script.headers["content-type"]


async def test_health_counts_notification_service_healthy_with_one_instance_down(gateway):
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{gateway.ops_url}/health")
    services = {entry["service"]: entry["status"] for entry in response.json()["services"]}
    assert services["notification-service"] == "healthy"
    assert response.status_code == 200, response.text


async def test_the_public_ports_tell_health_without_detail_and_serve_no_metrics(gateway):
    async with httpx.AsyncClient(http2=True, verify=tls_context(gateway)) as client:
        for url in (gateway.http_url, gateway.https_url):
            health = await client.get(f"{url}/health")
            assert (health.status_code, health.json()) == (200, {"status": "healthy"})
            assert (await client.get(f"{url}/metrics")).status_code == 404
        ops = await client.get(f"{gateway.ops_url}/metrics")
        assert ops.status_code == 200
        assert "gateway_shed_requests_total" in ops.text
        assert (await client.get(f"{gateway.ops_url}/api/users/me")).status_code == 404


async def test_a_ticket_opens_an_sse_stream_over_http2_and_sigterm_ends_it(gateway, users, stand_in):
    token = users.token(user_id=uuid.uuid4())
    async with httpx.AsyncClient(http2=True, verify=tls_context(gateway), base_url=gateway.https_url) as client:
        issued = await client.post("/api/auth/ticket", headers={"Authorization": f"Bearer {token}"})
        assert issued.status_code == 200, issued.text
        ticket = issued.json()["ticket"]
        async with client.stream("GET", "/api/events", params={"ticket": ticket}) as events:
            assert events.http_version == "HTTP/2"
            assert events.status_code == 200
            chunks = events.aiter_raw()
            assert b"id: 1" in await asyncio.wait_for(anext(chunks), timeout=10)
            assert not stand_in.finished.is_set()
            stopped_at = time.monotonic()
            gateway.popen.send_signal(signal.SIGTERM)
            async with asyncio.timeout(10):
                rest = [chunk async for chunk in chunks]
            assert b"id: 2" not in b"".join(rest)
    exit_code = await asyncio.to_thread(gateway.popen.wait, 20)
    assert exit_code == 0
    # Well inside the 30 s grace: the live stream did not hold the shutdown up.
    assert time.monotonic() - stopped_at < 10
    output = gateway.output()
    assert '"stopped"' in output
    assert ticket not in output
    assert token not in output
