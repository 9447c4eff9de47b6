"""Registration and discovery against a real Consul agent: the one CONSUL_HTTP_ADDR
names, else a hashicorp/consul container when a Docker engine answers; otherwise
these tests skip and say why. Never against an imitation of Consul."""

import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator

import consul.aio
import dns.asyncresolver
import pytest
from aiohttp import web

from devstack.testing import eventually, free_port
from interchange_common.discovery import (
    ConsulDiscovery,
    ConsulRegistration,
    DiscoveryUnavailable,
    DnsSrvDiscovery,
    Registration,
)

pytestmark = pytest.mark.integration
CONSUL_IMAGE = "hashicorp/consul:1.20"


def docker_unavailable_because() -> str | None:
    if shutil.which("docker") is None:
        return "there is no docker command"
    probe = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=20, check=False)
    if probe.returncode != 0:
        return "no Docker engine answers `docker info`"
    return None


@pytest.fixture(scope="module")
def consul_address() -> Iterator[str]:
    address = os.environ.get("CONSUL_HTTP_ADDR")
    if address:
        yield address.removeprefix("http://")
        return
    reason = docker_unavailable_because()
    if reason is not None:
        pytest.skip(f"no Consul agent to test against: CONSUL_HTTP_ADDR is not set and {reason}")
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    # Host networking: the agent's HTTP checks reach the test's servers on 127.0.0.1.
    container = (
        DockerContainer(CONSUL_IMAGE).with_command("agent -dev -client 127.0.0.1").with_kwargs(network_mode="host")
    )
    with container:
        wait_for_logs(container, "Synced node info", timeout=60)
        yield "127.0.0.1:8500"


@pytest.fixture
async def agent(consul_address: str) -> AsyncIterator[consul.aio.Consul]:
    host, _, port = consul_address.partition(":")
    client = consul.aio.Consul(host=host, port=int(port or 8500))
    yield client
    await client.close()


class HealthServer:
    """An instance's /health, whose answer the test flips."""

    def __init__(self) -> None:
        self.port = free_port()
        self.status = 200
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        async def health(_: web.Request) -> web.Response:
            return web.Response(status=self.status)

        app = web.Application()
        app.router.add_get("/health", health)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def registration_for(server: HealthServer, *, name: str) -> Registration:
    return Registration(
        service_id=f"{name}-{server.port}",
        name=name,
        address="127.0.0.1",
        port=server.port,
        tags=("version=test", "environment=test"),
        check_url=f"http://127.0.0.1:{server.port}/health",
        check_interval="1s",
        check_timeout="1s",
        deregister_after="1m",
    )


async def test_passing_instances_only_kept_fresh_then_deregistered(agent):
    name = f"ic-test-{uuid.uuid4().hex[:8]}"
    servers = [HealthServer(), HealthServer()]
    registrations = [
        ConsulRegistration(agent=agent.agent.service, registration=registration_for(s, name=name)) for s in servers
    ]
    discovery = ConsulDiscovery(health=agent.health, wait="2s")
    try:
        for server, registration in zip(servers, registrations, strict=True):
            await server.start()
            await registration.register()

        async def ports() -> set[int]:
            try:
                return {i.port for i in await discovery.healthy(service=name)}
            except DiscoveryUnavailable:
                return set()

        both = {s.port for s in servers}
        await eventually(lambda: _equal(ports, both), timeout=20, what="both instances passing")
        servers[0].status = 503
        await eventually(lambda: _equal(ports, {servers[1].port}), timeout=20, what="the failing one gone")

        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = ["127.0.0.1"]
        resolver.port = 8600
        srv = await DnsSrvDiscovery(resolver=resolver).healthy(service=name)
        assert {i.port for i in srv} == {servers[1].port}

        await registrations[1].deregister()
        await eventually(lambda: _equal(ports, set()), timeout=20, what="no instance left")
    finally:
        for registration in registrations:
            await registration.deregister()
        for server in servers:
            await server.stop()
        await discovery.close()


async def _equal(probe, expected) -> bool:
    return await probe() == expected
