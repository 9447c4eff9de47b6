"""The WebSocket protocol of live push: what a client may say, and what it is sent. Pure.

parse_client_message one client → server message:
                         {"type":"join_room","room"}          JoinRoom
                         {"type":"leave_room","room"}         LeaveRoom
                         {"type":"room_message","room","message"}   SendToRoom
                         {"type":"private_message","targetUserId","message"}   SendPrivate
                         {"type":"ping"}                      Ping
                     anything else raises LiveMessageRejected (answered with an error frame)
Rooms                the rooms one socket is in, at most ``limit``
welcome … error      the server → client frames, as JSON-ready dicts
notification_frame   a notification for its owner (a WebSocket message, and a TCP feed line)
"""

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from notification_service.domain.errors import LiveMessageRejected

MAX_ROOM_NAME = 64
_ROOM_NAME = re.compile(r"\A[A-Za-z0-9_.-]{1,64}\Z")


@dataclass(frozen=True, slots=True)
class JoinRoom:
    room: str


@dataclass(frozen=True, slots=True)
class LeaveRoom:
    room: str


@dataclass(frozen=True, slots=True)
class SendToRoom:
    room: str
    message: str


@dataclass(frozen=True, slots=True)
class SendPrivate:
    target_user_id: uuid.UUID
    message: str


@dataclass(frozen=True, slots=True)
class Ping:
    pass


ClientMessage = JoinRoom | LeaveRoom | SendToRoom | SendPrivate | Ping


def _room(value: Any) -> str:
    if not isinstance(value, str) or _ROOM_NAME.match(value) is None:
        raise LiveMessageRejected(f"room must be 1 to {MAX_ROOM_NAME} characters of A-Z a-z 0-9 _ . -")
    return value


def _message(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise LiveMessageRejected("message must be a non-empty string")
    return value


def parse_client_message(raw: bytes) -> ClientMessage:
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise LiveMessageRejected("each message must be one JSON object") from e
    if not isinstance(message, dict):
        raise LiveMessageRejected("each message must be one JSON object")
    kind = message.get("type")
    if kind == "ping":
        return Ping()
    if kind == "join_room":
        return JoinRoom(room=_room(message.get("room")))
    if kind == "leave_room":
        return LeaveRoom(room=_room(message.get("room")))
    if kind == "room_message":
        return SendToRoom(room=_room(message.get("room")), message=_message(message.get("message")))
    if kind == "private_message":
        target = message.get("targetUserId")
        try:
            target_user_id = uuid.UUID(target) if isinstance(target, str) else None
        except ValueError:
            target_user_id = None
        if target_user_id is None:
            raise LiveMessageRejected("targetUserId must be a user id")
        return SendPrivate(target_user_id=target_user_id, message=_message(message.get("message")))
    if not isinstance(kind, str):
        raise LiveMessageRejected('a message needs a "type"')
    raise LiveMessageRejected(f"unknown message type {kind[:64]!r}")


class Rooms:
    """The rooms one socket is in."""

    def __init__(self, *, limit: int) -> None:
        self._limit = limit
        self._rooms: set[str] = set()

    def __contains__(self, room: object) -> bool:
        return room in self._rooms

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._rooms))

    def join(self, room: str) -> None:
        if room in self._rooms:
            raise LiveMessageRejected(f"already in room {room}")
        if len(self._rooms) >= self._limit:
            raise LiveMessageRejected(f"too many rooms: a connection may be in at most {self._limit}")
        self._rooms.add(room)

    def leave(self, room: str) -> None:
        self.require(room)
        self._rooms.discard(room)

    def require(self, room: str) -> None:
        if room not in self._rooms:
            raise LiveMessageRejected(f"not in room {room}")


def _time(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def welcome(*, client_id: str, user_id: uuid.UUID, roles: frozenset[str]) -> dict[str, Any]:
    return {"type": "welcome", "clientId": client_id, "user": {"id": str(user_id), "roles": sorted(roles)}}


def user_joined(*, room: str, user_id: uuid.UUID, client_id: str) -> dict[str, Any]:
    return {"type": "user_joined", "room": room, "userId": str(user_id), "clientId": client_id}


def user_left(*, room: str, user_id: uuid.UUID, client_id: str) -> dict[str, Any]:
    return {"type": "user_left", "room": room, "userId": str(user_id), "clientId": client_id}


def room_message(*, room: str, sender: uuid.UUID, client_id: str, message: str, sent_at: datetime) -> dict[str, Any]:
    return {
        "type": "room_message",
        "room": room,
        "from": str(sender),
        "clientId": client_id,
        "message": message,
        "sentAt": _time(sent_at),
    }


def private_message(*, sender: uuid.UUID, message: str, sent_at: datetime) -> dict[str, Any]:
    return {"type": "private_message", "from": str(sender), "message": message, "sentAt": _time(sent_at)}


def notification_frame(payload: bytes) -> bytes:
    """``{"type":"notification","notification":<payload>}``, the payload being the
    notification's JSON as stored in the stream: wrapped, not parsed again."""
    return b'{"type":"notification","notification":' + payload + b"}"


def error(detail: str) -> dict[str, Any]:
    return {"type": "error", "detail": detail}


PONG: dict[str, Any] = {"type": "pong"}
