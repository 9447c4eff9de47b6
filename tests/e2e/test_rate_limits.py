"""Two more gateway instances with a tight limit, one Redis: they enforce one limit together."""

import dataclasses

import httpx
import pytest

from devstack.runner import NativeStack
from devstack.testing import free_port, run_id

LIMIT = 5


@pytest.fixture(scope="module")
def two_gateways(target):
    target.need("stack")
    template = next(service for service in target.stack.services if service.name == "gateway")
    prefix = f"ic-e2e-rl-{run_id()}"
    services = []
    for index in range(2):
        port = free_port()
        environment = {
            **template.environment,
            "HTTP_PORT": str(port),
            "HTTPS_PORT": str(free_port()),
            "OPS_PORT": str(free_port()),
            "REDIS_KEY_PREFIX": prefix,
            "RATE_LIMIT_REQUESTS": str(LIMIT),
            "RATE_LIMIT_WINDOW_SECONDS": "60",
        }
        services.append(
            dataclasses.replace(
                template,
                name=f"gateway-{index}",
                environment=environment,
                depends_on=[],
                health_url=f"http://127.0.0.1:{port}/health/live",
            )
        )
    stack = NativeStack(services=services, bin_dir=target.stack.native.bin_dir, log_dir=target.log_dir)
    stack.start(health_timeout=60)
    try:
        yield [service.health_url.removesuffix("/health/live") for service in services]
    finally:
        stack.stop()


def test_the_limit_is_shared_across_instances(two_gateways, new_account):
    account = new_account()
    responses = []
    for attempt in range(LIMIT + 2):
        with httpx.Client(base_url=two_gateways[attempt % 2], timeout=5) as client:
            responses.append(client.get("/api/users/me", headers=account.headers))
    statuses, last = [response.status_code for response in responses], responses[-1]
    assert statuses == [200] * LIMIT + [429, 429]
    assert last.headers["content-type"] == "application/problem+json"
    assert 1 <= int(last.headers["retry-after"]) <= 60
    assert last.headers["ratelimit-limit"] == str(LIMIT)
    assert last.headers["ratelimit-remaining"] == "0"


def test_another_user_has_their_own_budget(two_gateways, new_account):
    account = new_account()
    with httpx.Client(base_url=two_gateways[0], timeout=5) as client:
        response = client.get("/api/users/me", headers=account.headers)
    assert response.status_code == 200
    assert int(response.headers["ratelimit-remaining"]) == LIMIT - 1
