"""The instance's shutdown: draining first, deregistered, then the drain period; and
what draining changes in answers (a fake Consul agent; no sockets)."""

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from interchange_common import lifecycle
from interchange_common.asgi import ObservabilityMiddleware
from interchange_common.discovery import ConsulRegistration
from interchange_common.health import health_router


class FakeAgent:
    def __init__(self, *, fail: bool = False) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.fail = fail
        self.draining_when_deregistered: bool | None = None

    async def register(self, name: str, **kwargs: Any) -> None:
        self.calls.append(("register", {"name": name, **kwargs}))

    async def deregister(self, service_id: str, **kwargs: Any) -> None:
        self.draining_when_deregistered = lifecycle.current().draining
        self.calls.append(("deregister", service_id))
        if self.fail:
            raise ConnectionRefusedError("agent gone")


@pytest.fixture
def shutdown():
    before = lifecycle.current()
    yield
    lifecycle.install(before)


def registration(agent: FakeAgent) -> ConsulRegistration:
    return lifecycle.registration_for(
        agent=agent, name="order-service", address="10.0.0.5", port=8002, version="1.2.3", environment="production"
    )


async def test_registration_names_the_instance_with_tags_and_a_health_check(shutdown):
    agent = FakeAgent()
    await registration(agent).register()
    assert agent.calls == [
        (
            "register",
            {
                "name": "order-service",
                "service_id": "order-service-10.0.0.5-8002",
                "address": "10.0.0.5",
                "port": 8002,
                "tags": ["version=1.2.3", "environment=production"],
                "check": {
                    "HTTP": "http://10.0.0.5:8002/health",
                    "Interval": "5s",
                    "Timeout": "2s",
                    "DeregisterCriticalServiceAfter": "1m",
                },
            },
        )
    ]


async def test_a_stop_drains_first_then_deregisters_once(shutdown):
    agent = FakeAgent()
    stopping = lifecycle.Shutdown(registration=registration(agent), drain_seconds=0)
    lifecycle.install(stopping)
    await stopping.begin()
    await stopping.begin()
    assert agent.calls == [("deregister", "order-service-10.0.0.5-8002")]
    assert agent.draining_when_deregistered is True


async def test_an_unreachable_agent_does_not_stop_the_shutdown(shutdown):
    stopping = lifecycle.Shutdown(registration=registration(FakeAgent(fail=True)), drain_seconds=0)
    await stopping.begin()
    assert stopping.draining


async def test_while_draining_health_is_503_and_http_1_1_connections_close(shutdown):
    app = FastAPI()
    app.include_router(health_router(checks=list))
    app.add_middleware(ObservabilityMiddleware, max_body_bytes=1024)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        before = await client.get("/health")
        assert before.status_code == 200
        assert "connection" not in before.headers
        lifecycle.install(lifecycle.Shutdown(drain_seconds=0, draining=True))
        during = await client.get("/health")
        assert (during.status_code, during.json()) == (503, {"status": "draining"})
        assert during.headers["connection"] == "close"
        assert (await client.get("/health/live")).status_code == 200
