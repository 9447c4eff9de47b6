"""The broker goes away during traffic (a private RabbitMQ node, stopped and started
again): orders keep being taken, and once it is back the publishers (event-store's
relay, user-service's outbox relay) and the consumer (notification-service) reconnect
by themselves and deliver every event, once."""

import dataclasses
import threading
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest

from devstack.accounts import register
from devstack.mailsink import body_of
from devstack.shop import ITEMS, shop_on
from devstack.testing import PrivateRabbitMQ, run_id, wait_for

ROOT = Path(__file__).resolve().parents[2]
ORDERS = 60


@pytest.fixture(scope="module")
def broker():
    reason = PrivateRabbitMQ.unavailable_because()
    if reason:
        pytest.skip(f"needs a private RabbitMQ node: {reason}")
    node = PrivateRabbitMQ(name=f"ic-fault-{run_id()}")
    node.start()
    try:
        yield node
    finally:
        node.remove()


def test_publishers_and_consumers_recover_by_themselves(infra, broker, tmp_path_factory):
    private = dataclasses.replace(infra, rabbitmq_url=broker.url)
    with shop_on(
        root=ROOT, infra=private, log_dir=tmp_path_factory.mktemp("stack-logs"), purpose="fault_broker"
    ) as shop:
        accounts = [register(shop.gateway, name=f"Client {n}") for n in range(3)]
        confirmed: dict[str, str] = {}
        lock = threading.Lock()

        def client(account) -> None:
            with httpx.Client(base_url=str(shop.gateway.base_url), timeout=10) as http:
                for _ in range(ORDERS // len(accounts)):
                    answer = http.post(
                        "/api/orders",
                        json={"items": ITEMS},
                        headers={**account.headers, "Idempotency-Key": str(uuid.uuid4())},
                    )
                    # Taking orders needs no broker: every one is confirmed.
                    assert answer.status_code == 201, answer.text
                    with lock:
                        confirmed[answer.json()["id"]] = account.email

        threads = [threading.Thread(target=client, args=(account,), daemon=True) for account in accounts]
        for thread in threads:
            thread.start()
        wait_for(lambda: len(confirmed) >= 10, timeout=60, what="the first orders")
        broker.stop()
        wait_for(lambda: len(confirmed) >= 30, timeout=60, what="orders taken while the broker is down")
        registered_while_down = register(shop.gateway, name="Registered while the broker was down")
        broker.start()
        for thread in threads:
            thread.join(timeout=120)
            assert not thread.is_alive()
        late = shop.place(registered_while_down)
        assert late.status_code == 201, late.text
        confirmed[late.json()["id"]] = registered_while_down.email

        def mails_by_order() -> Counter[str] | None:
            counted = Counter(
                order_id
                for message in shop.mail.messages()
                for order_id, email in confirmed.items()
                if email in str(message["To"]) and order_id in body_of(message)
            )
            return counted if len(counted) == len(confirmed) else None

        counted = wait_for(mails_by_order, timeout=120, what="a mail for every order")
        assert set(counted.values()) == {1}
