"""Latency on the link from order-service to user-service (issue 6).

Calls time out at their deadline (order-service answers 503 itself, well inside the
gateway's 5 s route timeout), and the attempts user-service receives stay within one
per call plus what the retry budget allows.

Two ways to add the latency: the kernel's netem on a link in a network namespace the
test makes (needs root and sch_netem; skipped with the reason otherwise), and a
delaying TCP proxy on loopback (devstack.faults.LatencyProxy), which runs anywhere.
"""

import json
from pathlib import Path
from typing import Protocol

import pytest

from devstack.accounts import register
from devstack.faults import LatencyProxy, NetnsLink, netem_unavailable_because
from devstack.shop import ORDER_INSTANCES, Shop
from devstack.testing import metric, wait_for

DEADLINE = 0.5
SHOP_ENV = {
    instance: {"USER_SERVICE_DEADLINE_SECONDS": str(DEADLINE), "BREAKER_FAILURES": "100"}
    for instance in ORDER_INSTANCES
}
CALLS = 8
# RetryBudget's defaults: 10 tokens at the start, 0.2 per call, 1 per second.
BUDGET_TOKENS, BUDGET_RATIO, BUDGET_PER_SECOND = 10, 0.2, 1.0


def received_get_user(log: Path) -> int:
    """GetUser calls user-service's gRPC server saw, from its one-line-per-call log."""
    count = 0
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("message") == "rpc" and entry.get("method") == "/user.UserService/GetUser":
            count += 1
    return count


class Link(Protocol):
    port: int

    def set_delay(self, seconds: float) -> None: ...


def test_latency_through_a_delaying_proxy(shop: Shop):
    with LatencyProxy(target_port=shop.stack.port("user-service", 50051)) as proxy:
        deadline_and_attempts_hold(shop, link=proxy)


def test_netem_latency_on_a_link_in_a_namespace_of_our_own(shop: Shop):
    reason = netem_unavailable_because()
    if reason is not None:
        pytest.skip(f"{reason}; test_latency_through_a_delaying_proxy makes the same checks")
    with NetnsLink(target_port=shop.stack.port("user-service", 50051)) as link:
        deadline_and_attempts_hold(shop, link=link)


def deadline_and_attempts_hold(shop: Shop, *, link: Link) -> None:
    """Both order instances call user-service across ``link``; with latency on it,
    orders fail at order-service's deadline and attempts stay within the budget."""
    stack = shop.stack
    log = stack.native.log_dir / "user-service.log"  # type: ignore[operator]
    orders = [stack.url(instance, 8002) for instance in ORDER_INSTANCES]
    account = register(shop.gateway)

    def total(name: str) -> float:
        return sum(metric(url, name, {"upstream": "user-service"}) or 0.0 for url in orders)

    for instance in ORDER_INSTANCES:
        stack.native.restart(instance, environment={"USER_SERVICE_URL": f"grpc://127.0.0.1:{link.port}"})
    try:
        # Across the link, no latency yet, until both instances have their gRPC
        # connection up (a connection made under latency fails a call before it is sent).
        for _ in range(40):
            assert shop.place(account).status_code == 201
            if all(metric(url, "rpc_client_attempts_total", {"upstream": "user-service"}) for url in orders):
                break
        else:
            raise AssertionError("the gateway sent 40 orders to one instance only")
        calls_before, attempts_before = total("rpc_client_calls_total"), total("rpc_client_attempts_total")
        received_before = received_get_user(log)
        link.set_delay(2 * DEADLINE)
        answers = [shop.place(account) for _ in range(CALLS)]
        calls = total("rpc_client_calls_total") - calls_before
        attempts = total("rpc_client_attempts_total") - attempts_before
        # What was sent arrives late: wait until user-service has seen all of it.
        wait_for(
            lambda: received_get_user(log) - received_before >= attempts,
            timeout=30,
            what="the delayed attempts to reach user-service",
        )
        received = received_get_user(log) - received_before
        link.set_delay(0.0)
    finally:
        for instance in ORDER_INSTANCES:
            stack.native.restart(instance)

    for answer in answers:
        assert answer.status_code == 503, answer.text  # order-service's own answer, not the gateway's 504
        assert answer.json()["detail"] == "user-service: DEADLINE_EXCEEDED"
    assert calls == CALLS
    allowed_retries = BUDGET_TOKENS + BUDGET_RATIO * calls + BUDGET_PER_SECOND * CALLS * 2 * DEADLINE
    assert calls <= attempts <= calls + allowed_retries
    assert received == attempts  # the backend saw exactly what was sent
