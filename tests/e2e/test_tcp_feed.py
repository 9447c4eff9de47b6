"""The TCP feed of a running stack (API.md "Raw protocols"): a terminal signs in with
its access token and sees its own notifications arrive as lines."""

import socket
import uuid
from typing import Any

import orjson
import pytest


class Terminal:
    def __init__(self, port: int) -> None:
        self.socket = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.lines = self.socket.makefile("rb")

    def send(self, message: dict[str, Any]) -> None:
        self.socket.sendall(orjson.dumps(message) + b"\n")

    def receive(self) -> dict[str, Any]:
        line = self.lines.readline()
        assert line, "the feed closed the connection"
        return orjson.loads(line)

    def receive_type(self, kind: str) -> dict[str, Any]:
        while (message := self.receive())["type"] != kind:
            pass
        return message

    def close(self) -> None:
        self.lines.close()
        self.socket.close()


@pytest.fixture
def terminal(target):
    target.need("stack")
    opened = Terminal(target.stack.port("notification-service", 9000))
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
