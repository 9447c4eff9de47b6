"""Live push through the gateway (docs/api.md "Notifications and live push"): rooms and
private messages over the WebSocket, tickets for browsers, and Server-Sent Events
that resume from Last-Event-ID with nothing missed and nothing twice.

The stack runs two notification-service instances and the gateway spreads
connections over both, so these messages cross instances through Redis.
"""

import contextlib
import uuid
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from devstack.accounts import Account
from devstack.liveclients import WELCOME, Chat, EventStream, ticket
from devstack.testing import assert_problem, wait_for

STREAMS_PER_USER = 5  # SSE_MAX_STREAMS_PER_USER


def place(gateway: httpx.Client, account: Account) -> str:
    placed = gateway.post(
        "/api/orders",
        json={"items": [{"sku": "LIVE-1", "quantity": 1, "unit_price": "5.00"}]},
        headers={**account.headers, "Idempotency-Key": str(uuid.uuid4())},
    )
    assert placed.status_code == 201, placed.text
    return str(placed.json()["id"])


def order_notifications(stream: EventStream, count: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    while len(found) < count:
        found += [n for n in stream.notifications(1) if n["type"] != WELCOME]
    return found


def stored(gateway: httpx.Client, account: Account, order_id: str) -> bool:
    listed = gateway.get("/api/notifications", params={"limit": 100}, headers=account.headers).json()["items"]
    return any(n["data"].get("order_id") == order_id for n in listed)


def test_room_members_see_each_other_and_a_private_message_reaches_only_its_target(target, new_account):
    a, b, c = new_account("Ann"), new_account("Bob"), new_account("Cy")
    room = f"room-{uuid.uuid4().hex[:8]}"
    url = target.gateway_url
    with Chat(url, account=a) as ann, Chat(url, account=b) as bob, Chat(url, account=c) as cy:
        for chat, account in ((ann, a), (bob, b), (cy, c)):
            welcome = chat.receive()
            assert (welcome["type"], welcome["user"]["id"]) == ("welcome", account.id)

        ann.send({"type": "join_room", "room": room})
        assert ann.receive_type("user_joined")["userId"] == a.id
        bob.send({"type": "join_room", "room": room})
        assert bob.receive_type("user_joined")["userId"] == b.id
        assert ann.receive_type("user_joined") | {"clientId": None} == {
            "type": "user_joined",
            "room": room,
            "userId": b.id,
            "clientId": None,
        }

        ann.send({"type": "room_message", "room": room, "message": "hello from Ann"})
        for chat in (bob, ann):
            said = chat.receive_type("room_message")
            assert (said["room"], said["from"], said["message"]) == (room, a.id, "hello from Ann")
        bob.send({"type": "room_message", "room": room, "message": "hi Ann"})
        assert ann.receive_type("room_message")["message"] == "hi Ann"

        ann.send({"type": "private_message", "targetUserId": b.id, "message": "psst, Bob"})
        whispered = bob.receive_type("private_message")
        assert (whispered["from"], whispered["message"]) == (a.id, "psst, Bob")

        # Cy joined no room: the first thing Cy hears after the welcome is this message
        # sent last, so no room message and no whisper reached Cy before it.
        ann.send({"type": "private_message", "targetUserId": c.id, "message": "the last one"})
        assert cy.receive() | {"sentAt": None} == {
            "type": "private_message",
            "from": a.id,
            "message": "the last one",
            "sentAt": None,
        }
        # The sender of a private message gets no copy: Ann's next message is the pong.
        ann.send({"type": "ping"})
        heard = [ann.receive()]
        while heard[-1]["type"] != "pong":
            heard.append(ann.receive())
        assert [m for m in heard if m["type"] == "private_message"] == []


def test_leaving_a_room_is_announced_and_stops_its_messages(target, new_account):
    a, b = new_account("Ann"), new_account("Bob")
    room = f"room-{uuid.uuid4().hex[:8]}"
    with Chat(target.gateway_url, account=a) as ann, Chat(target.gateway_url, account=b) as bob:
        for chat in (ann, bob):
            chat.receive_type("welcome")
            chat.send({"type": "join_room", "room": room})
        ann.receive_type("user_joined")
        bob.receive_type("user_joined")
        bob.send({"type": "leave_room", "room": room})
        left = ann.receive_type("user_left")
        assert (left["room"], left["userId"]) == (room, b.id)
        bob.receive_type("user_left")
        ann.send({"type": "room_message", "room": room, "message": "anyone?"})
        ann.receive_type("room_message")
        bob.send({"type": "ping"})
        assert bob.receive()["type"] == "pong"  # and not Ann's room message


def test_bad_messages_get_an_error_and_the_socket_stays(target, new_account):
    with Chat(target.gateway_url, account=new_account()) as chat:
        chat.receive_type("welcome")
        chat.connection.send("{not json")
        assert chat.receive()["type"] == "error"
        chat.send({"type": "shout", "message": "hi"})
        assert chat.receive()["type"] == "error"
        chat.send({"type": "room_message", "room": "never-joined", "message": "hi"})
        assert chat.receive()["type"] == "error"
        chat.send({"type": "ping"})
        assert chat.receive() == {"type": "pong"}


def test_a_ticket_opens_one_socket_once(target, gateway, new_account):
    me = new_account()
    once = ticket(gateway, me)
    with Chat(target.gateway_url, ticket=once) as chat:
        assert chat.receive()["user"]["id"] == me.id
    with Chat(target.gateway_url, ticket=once) as again:
        assert again.close_code() == 1008


@pytest.mark.parametrize("credentials", ["none", "forged ticket", "forged token"])
def test_a_socket_without_valid_credentials_is_closed_with_1008(target, credentials):
    forged = Account(str(uuid.uuid4()), "x@example.com", "x", "not.a.token")
    chat = {
        "none": Chat(target.gateway_url),
        "forged ticket": Chat(target.gateway_url, ticket="made-up"),
        "forged token": Chat(target.gateway_url, account=forged),
    }[credentials]
    with chat:
        assert chat.close_code() == 1008


def test_a_socket_from_a_foreign_origin_is_refused_before_the_handshake(target, new_account):
    with (
        pytest.raises(InvalidStatus) as refused,
        Chat(target.gateway_url, account=new_account(), origin="https://elsewhere.example"),
    ):
        pass
    assert refused.value.response.status_code == 403


def test_events_resume_with_exactly_the_missed_notifications_in_order(gateway, new_account):
    me = new_account()
    with EventStream(gateway, headers=me.headers) as stream:
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        first = place(gateway, me)
        assert [n["data"]["order_id"] for n in order_notifications(stream, 1)] == [first]
        resume_from = stream.last_id
    assert resume_from is not None

    # Offline: three orders, each stored before the next is placed.
    missed = []
    for _ in range(3):
        missed.append(place(gateway, me))
        wait_for(lambda: stored(gateway, me, missed[-1]), timeout=30, what="the notification to be stored")

    with EventStream(gateway, headers=me.headers, last_event_id=resume_from) as stream:
        assert [n["data"]["order_id"] for n in order_notifications(stream, 3)] == missed
        # Then live ones, with nothing repeated in between.
        later = place(gateway, me)
        assert [n["data"]["order_id"] for n in order_notifications(stream, 1)] == [later]


def test_events_with_a_ticket_and_without_credentials(gateway, new_account):
    me = new_account()
    once = ticket(gateway, me)
    with EventStream(gateway, params={"ticket": once}) as stream:
        assert stream.response.status_code == 200
    refused = gateway.get("/api/events", params={"ticket": once})
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"
    assert gateway.get("/api/events").status_code == 401


def test_one_stream_too_many_is_a_429_that_says_when_to_come_back(gateway, new_account):
    me = new_account()
    with contextlib.ExitStack() as open_streams:
        for _ in range(STREAMS_PER_USER):
            stream = open_streams.enter_context(EventStream(gateway, headers=me.headers))
            assert stream.response.status_code == 200
        with gateway.stream("GET", "/api/events", headers=me.headers) as refused:
            refused.read()
    assert_problem(refused, 429)
    # The cap's own numbers, not the request limit's; back once the first lease can lapse.
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["ratelimit-reset"] == refused.headers["retry-after"]
    assert refused.headers["ratelimit-limit"] == str(STREAMS_PER_USER)
    assert refused.headers["ratelimit-remaining"] == "0"


def test_a_malformed_last_event_id_is_refused(gateway, new_account):
    me = new_account()
    answer = gateway.get("/api/events", headers={**me.headers, "Last-Event-ID": "yesterday"})
    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"
