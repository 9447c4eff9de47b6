"""A slow client cannot hold the gateway for ever.

The request head must be complete within the head timeout (Hypercorn's idle timer,
5 s), the body within the body timeout of the request's start (408; 2 s in this
suite's stack, see conftest.py), and neither bounds a live stream after its request:
an SSE client that sends nothing still gets its events.
"""

import socket
import time
import uuid
from urllib.parse import urlsplit

from devstack.liveclients import WELCOME, EventStream

BODY_TIMEOUT_SECONDS = 2.0  # conftest.py sets REQUEST_BODY_TIMEOUT_SECONDS for the stack
BOUND_SECONDS = 30.0  # the test's own limit: past it the server held the connection


def connect(gateway_url: str) -> socket.socket:
    address = urlsplit(gateway_url)
    return socket.create_connection((address.hostname, address.port), timeout=BOUND_SECONDS)


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def test_a_request_head_that_never_ends_is_closed(target):
    with connect(target.gateway_url) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: gateway\r\nX-Slow: ")
        assert read_all(sock) == b""  # closed without an answer, well inside the bound


def test_a_body_that_stops_arriving_gets_a_408_and_the_connection_closes(target):
    with connect(target.gateway_url) as sock:
        sock.sendall(
            b"POST /api/auth/token HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{"
        )
        answer = read_all(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer
    assert b"did not arrive within" in body


def test_a_silent_sse_client_keeps_its_stream_past_the_body_timeout(gateway, new_account):
    account = new_account("Listener")
    with EventStream(gateway, headers=account.headers) as stream:
        assert stream.response.status_code == 200
        time.sleep(2 * BODY_TIMEOUT_SECONDS)  # what is tested: time passes, the client sends nothing
        placed = gateway.post(
            "/api/orders",
            json={"items": [{"sku": "SLOW-1", "quantity": 1, "unit_price": "1.00"}]},
            headers={**account.headers, "Idempotency-Key": str(uuid.uuid4())},
        )
        assert placed.status_code == 201, placed.text
        while (notification := stream.notifications(1)[0])["type"] == WELCOME:
            pass
    assert notification["data"]["order_id"] == placed.json()["id"]
