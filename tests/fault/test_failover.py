"""Failure handling between services (issue 6), on a native stack with two
order-service instances behind the gateway (static discovery):

- SIGKILL one instance under steady traffic: a short, bounded burst of errors at
  most, the dead instance is ejected from the gateway's set, and once restarted it
  takes traffic again.
- SIGSTOP user-service: order creation fails fast (the breaker's answer, not a
  timeout) once the breaker opens; SIGCONT: a half-open probe succeeds and the
  breaker closes by itself.
- SIGTERM one instance under steady traffic: it drains (and would deregister from
  Consul first), finishes what is in flight and exits 0; no client sees an error.
"""

import signal
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field

import httpx

from devstack.accounts import Account, register
from devstack.shop import ITEMS, ORDER_INSTANCES, USER_INSTANCES, Shop
from devstack.testing import metric, wait_for

# Cool-downs the test can wait out; a short user check deadline.
SHOP_ENV = {
    instance: {"BREAKER_OPEN_SECONDS": "5", "USER_SERVICE_DEADLINE_SECONDS": "0.5"} for instance in ORDER_INSTANCES
} | {"gateway": {"OUTLIER_EJECT_SECONDS": "2", "OUTLIER_MAX_EJECT_SECONDS": "2"}}


def _outcome(response: httpx.Response) -> str:
    """The status, and for a failure what it said (so a failed assertion shows why)."""
    if response.status_code < 400:
        return str(response.status_code)
    return f"{response.status_code} {response.text[:100]}"


@dataclass
class Traffic:
    """Steady traffic through the gateway from one thread: each placed order is read
    back; every outcome is recorded in order."""

    gateway_url: str
    account: Account
    outcomes: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(base_url=self.gateway_url, timeout=10, headers=self.account.headers) as http:
            while not self.stop.is_set():
                try:
                    placed = http.post(
                        "/api/orders", json={"items": ITEMS}, headers={"Idempotency-Key": str(uuid.uuid4())}
                    )
                    self.outcomes.append(_outcome(placed))
                    if placed.status_code == 201:
                        read = http.get(f"/api/orders/{placed.json()['id']}")
                        self.outcomes.append(_outcome(read))
                except httpx.TransportError as e:
                    self.outcomes.append(type(e).__name__)

    def count(self) -> int:
        return len(self.outcomes)


def test_a_killed_order_instance_costs_a_short_burst_is_ejected_and_returns(shop: Shop):
    gateway_url = shop.stack.url("gateway", 8080)
    second = shop.stack.url(ORDER_INSTANCES[1], 8002)
    second_id = f"127.0.0.1:{shop.stack.port(ORDER_INSTANCES[1], 8002)}"
    traffic = Traffic(gateway_url=gateway_url, account=register(shop.gateway))
    runner = threading.Thread(target=traffic.run)
    runner.start()
    try:
        wait_for(lambda: traffic.count() >= 40, timeout=60, what="traffic before the kill")
        before = traffic.count()
        shop.stack.native.kill(ORDER_INSTANCES[1])
        wait_for(lambda: traffic.count() >= before + 100, timeout=120, what="traffic after the kill")
        ejected = metric(
            shop.stack.url("gateway", 8081),
            "upstream_instance_ejected",
            {"service": "order-service", "instance": second_id},
        )
        after = traffic.outcomes[before:]

        shop.stack.native.restart(ORDER_INSTANCES[1])
        served = {"method": "POST", "route": "/internal/orders", "status": "201"}
        wait_for(
            lambda: (metric(second, "http_requests_total", served) or 0) > 0,
            timeout=60,
            what="the restarted instance to take orders again",
        )
    finally:
        traffic.stop.set()
        runner.join(timeout=30)

    errors = [outcome for outcome in after if outcome not in ("200", "201")]
    assert len(errors) <= 3, Counter(after)  # at most the calls in flight on the killed instance
    assert all(outcome in ("200", "201") for outcome in after[-50:]), Counter(after[-50:])
    assert ejected == 1  # the gateway passed over it while it was dead
    assert Counter(traffic.outcomes)["201"] > 0


def test_a_stopped_user_service_fails_orders_fast_then_the_breaker_closes(shop: Shop):
    account = register(shop.gateway)
    instances = [shop.stack.url(instance, 8002) for instance in ORDER_INSTANCES]

    def breakers_open() -> bool:
        states = [metric(url, "circuit_breaker_state", {"breaker": "user-service"}) for url in instances]
        return all(state == 2 for state in states)

    for instance in USER_INSTANCES:
        shop.stack.native.kill(instance, sig=signal.SIGSTOP)
    try:
        failures = []
        while not breakers_open():
            placed = shop.place(account)
            assert placed.status_code == 503, placed.text
            failures.append(placed.json()["detail"])
            # Five failures in a row open each instance's breaker, which stays open 5 s:
        # both are open at once well before the first one's cool-down ends.
        assert len(failures) <= 20, failures
        refused = shop.place(account)
        # The breaker's own answer: user-service was not asked, so no deadline was spent.
        assert refused.status_code == 503
        assert "not asked again yet" in refused.json()["detail"]
    finally:
        for instance in USER_INSTANCES:
            shop.stack.native.kill(instance, sig=signal.SIGCONT)

    def placed_once() -> httpx.Response | None:
        answer = shop.place(account)
        return answer if answer.status_code == 201 else None

    placed = wait_for(
        placed_once,
        timeout=30,
        interval=0.5,
        what="an order to go through once a half-open probe succeeds",
    )
    assert placed.json()["status"] == "PLACED"

    def all_closed() -> bool:
        # Each order is a probe for the instance it reaches, once its cool-down is over.
        shop.place(account)
        return all(metric(url, "circuit_breaker_state", {"breaker": "user-service"}) == 0 for url in instances)

    wait_for(all_closed, timeout=30, interval=0.5, what="every instance's breaker closed by itself")


def test_a_terminated_order_instance_drains_and_no_client_sees_an_error(shop: Shop):
    native = shop.stack.native
    traffic = Traffic(gateway_url=shop.stack.url("gateway", 8080), account=register(shop.gateway))
    runner = threading.Thread(target=traffic.run)
    runner.start()
    try:
        wait_for(lambda: traffic.count() >= 40, timeout=60, what="traffic before SIGTERM")
        before = traffic.count()
        native.kill(ORDER_INSTANCES[1], sig=signal.SIGTERM)
        exit_code = wait_for(
            lambda: (code := native.returncode(ORDER_INSTANCES[1])) is not None and (code,),
            timeout=30,
            what="the instance to drain and exit",
        )
        exited_at = traffic.count()
        wait_for(lambda: traffic.count() >= exited_at + 50, timeout=60, what="traffic after it exited")
    finally:
        traffic.stop.set()
        runner.join(timeout=30)
    native.restart(ORDER_INSTANCES[1])

    assert exit_code == (0,)
    during = traffic.outcomes[before:]
    # Draining answered every request it had and told the gateway to close its
    # connections; then the closed door (connection refused) sent callers to the other.
    assert all(outcome in ("200", "201") for outcome in during), Counter(during)
    assert traffic.count() - exited_at >= 50
