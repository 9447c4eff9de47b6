"""The raw feeds of a running stack (docs/api.md "Raw protocols"): a TCP terminal signs in
with its access token and sees its own notifications arrive as lines; UDP devices
ping and broadcast to each other with real tokens."""

import uuid

import pytest

from devstack.liveclients import Device, Terminal


@pytest.fixture
def terminal(target):
    target.need("ports")
    opened = Terminal(target.ports.port("notification-service", 9000))
    yield opened
    opened.close()


def test_a_signed_in_terminal_sees_its_own_order_notification(gateway, new_account, terminal):
    me = new_account()
    assert terminal.receive()["type"] == "welcome"
    terminal.send({"type": "auth", "token": me.token})
    assert terminal.receive() == {"type": "authenticated", "userId": me.id}
    placed = gateway.post(
        "/api/orders",
        json={"items": [{"sku": "TERM-1", "quantity": 1, "unit_price": "3.00"}]},
        headers={**me.headers, "Idempotency-Key": str(uuid.uuid4())},
    )
    assert placed.status_code == 201, placed.text
    notification = terminal.receive_type("notification")["notification"]
    assert (notification["type"], notification["data"]["order_id"]) == ("order.placed", placed.json()["id"])
    assert notification["title"] == "Order confirmed"


def test_a_forged_token_is_refused_on_the_feed(terminal):
    assert terminal.receive()["type"] == "welcome"
    terminal.send({"type": "auth", "token": "eyJhbGciOiJub25lIn0.e30."})
    assert terminal.receive()["type"] == "error"
    terminal.send({"ping": 1})
    assert terminal.receive()["type"] == "echo"


@pytest.fixture
def devices(target):
    target.need("ports")
    opened: list[Device] = []

    def open_device() -> Device:
        opened.append(Device(target.ports.port("notification-service", 9001)))
        return opened[-1]

    yield open_device
    for device in opened:
        device.close()


def test_udp_devices_ping_and_broadcast_to_each_other_with_real_tokens(new_account, devices):
    ada, bob = new_account(), new_account()
    first, second = devices(), devices()
    for device, account in ((first, ada), (second, bob)):
        device.send({"type": "ping", "id": 1, "token": account.token})
        assert device.receive() == {"type": "ack", "id": 1}
        assert device.receive() == {"type": "pong"}
    first.send({"type": "broadcast", "data": {"hello": "bob"}, "token": ada.token})
    assert first.receive()["type"] == "ack"
    assert second.receive() == {"type": "broadcast", "from": ada.id, "data": {"hello": "bob"}}


def test_udp_without_a_valid_token_gets_no_further_than_pong(devices):
    device = devices()
    device.send({"type": "broadcast", "data": "x", "token": "eyJhbGciOiJub25lIn0.e30."})
    assert device.receive()["type"] == "error"
    device.send({"type": "ping"})
    assert [device.receive()["type"], device.receive()["type"]] == ["ack", "pong"]
