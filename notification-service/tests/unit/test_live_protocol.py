"""The pure part of live push: stream ids (domain.live_push), the WebSocket protocol and a
socket's rooms (domain.websocket_protocol)."""

import uuid
from datetime import UTC, datetime

import orjson
import pytest

from notification_service.domain import websocket_protocol as protocol
from notification_service.domain.errors import InvalidStreamId, LiveMessageRejected
from notification_service.domain.live_push import BEFORE_ALL, StreamId, parse_stream_id


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        ("1700000000000-0", StreamId(1700000000000, 0)),
        ("0-1", StreamId(0, 1)),
        ("5-18", StreamId(5, 18)),
    ],
)
def test_stream_ids_parse(raw, parsed):
    assert parse_stream_id(raw) == parsed
    assert str(parsed) == raw


@pytest.mark.parametrize(
    "raw",
    ["", "1700000000000", "abc", "1-2-3", "-1-0", "1-", "1 -0", "99999999999999999999999-0", "18446744073709551616-0"],
)
def test_malformed_stream_ids_are_refused(raw):
    with pytest.raises(InvalidStreamId):
        parse_stream_id(raw)


def test_stream_ids_order_by_time_then_sequence():
    ids = [StreamId(2, 0), StreamId(1, 10), StreamId(1, 2), BEFORE_ALL]
    assert sorted(ids) == [BEFORE_ALL, StreamId(1, 2), StreamId(1, 10), StreamId(2, 0)]


def message(**fields):
    return orjson.dumps(fields)


def test_each_client_message_type_parses():
    target = uuid.uuid4()
    assert protocol.parse_client_message(message(type="ping")) == protocol.Ping()
    assert protocol.parse_client_message(message(type="join_room", room="a.b_c-1")) == protocol.JoinRoom(room="a.b_c-1")
    assert protocol.parse_client_message(message(type="leave_room", room="r")) == protocol.LeaveRoom(room="r")
    assert protocol.parse_client_message(message(type="room_message", room="r", message="hi")) == protocol.SendToRoom(
        room="r", message="hi"
    )
    assert protocol.parse_client_message(
        message(type="private_message", targetUserId=str(target), message="psst")
    ) == protocol.SendPrivate(target_user_id=target, message="psst")


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        (b"not json", "JSON object"),
        (b"[1]", "JSON object"),
        (b'"x"', "JSON object"),
        (b"{}", '"type"'),
        (message(type=3), '"type"'),
        (message(type="dance"), "unknown message type 'dance'"),
        (message(type="join_room"), "room must be"),
        (message(type="join_room", room=""), "room must be"),
        (message(type="join_room", room="x" * 65), "room must be"),
        (message(type="join_room", room="has space"), "room must be"),
        (message(type="join_room", room="ünï"), "room must be"),
        (message(type="room_message", room="r"), "message must be"),
        (message(type="room_message", room="r", message=""), "message must be"),
        (message(type="room_message", room="r", message="   "), "message must be"),
        (message(type="room_message", room="r", message=5), "message must be"),
        (message(type="private_message", message="m"), "targetUserId"),
        (message(type="private_message", targetUserId="bob", message="m"), "targetUserId"),
        (message(type="private_message", targetUserId=str(uuid.uuid4()), message=None), "message must be"),
    ],
)
def test_bad_client_messages_are_rejected_with_a_reason(raw, detail):
    with pytest.raises(LiveMessageRejected, match=detail.replace("(", r"\(")):
        protocol.parse_client_message(raw)


def test_a_room_name_may_be_64_characters():
    assert protocol.parse_client_message(message(type="join_room", room="r" * 64)) == protocol.JoinRoom(room="r" * 64)


def test_rooms_are_capped_and_checked():
    rooms = protocol.Rooms(limit=2)
    rooms.join("a")
    with pytest.raises(LiveMessageRejected, match="already in room a"):
        rooms.join("a")
    rooms.join("b")
    with pytest.raises(LiveMessageRejected, match="too many rooms"):
        rooms.join("c")
    rooms.require("a")
    rooms.leave("a")
    with pytest.raises(LiveMessageRejected, match="not in room a"):
        rooms.require("a")
    with pytest.raises(LiveMessageRejected, match="not in room a"):
        rooms.leave("a")
    rooms.join("c")
    assert list(rooms) == ["b", "c"]


def test_frames_have_the_documented_shape():
    user, at = uuid.uuid4(), datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    assert protocol.welcome(client_id="c1", user_id=user, roles=frozenset({"user", "admin"})) == {
        "type": "welcome",
        "clientId": "c1",
        "user": {"id": str(user), "roles": ["admin", "user"]},
    }
    assert protocol.room_message(room="r", sender=user, client_id="c1", message="hi", sent_at=at) == {
        "type": "room_message",
        "room": "r",
        "from": str(user),
        "clientId": "c1",
        "message": "hi",
        "sentAt": "2026-12-01T10:00:00Z",
    }
    assert protocol.private_message(sender=user, message="m", sent_at=at) == {
        "type": "private_message",
        "from": str(user),
        "message": "m",
        "sentAt": "2026-12-01T10:00:00Z",
    }
    assert protocol.user_joined(room="r", user_id=user, client_id="c1")["type"] == "user_joined"
    assert protocol.user_left(room="r", user_id=user, client_id="c1")["type"] == "user_left"
    assert protocol.error("nope") == {"type": "error", "detail": "nope"}
