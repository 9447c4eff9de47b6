"""Live push, what travels: what a live subscriber receives and why it stops. Pure.

StreamId          an entry id "<ms>-<seq>" in a user's notification stream: the SSE
                  event id, ordered
parse_stream_id   a resume point from outside (Last-Event-ID), or InvalidStreamId
BEFORE_ALL        the id before every entry
LiveNotification  one notification from its user's stream, as its owner reads it
LiveFrame         one server → client WebSocket message (a room or private message, a reply)
LiveItem          what a subscription hands out: either of those
ConnectionKind    the connections counted per user: "sockets" (WebSockets), "streams" (SSE)
TOO_SLOW … CLOSED why a subscription ended (SubscriptionEnded.reason)
"""

import re
from dataclasses import dataclass
from typing import Literal

from notification_service.domain.errors import InvalidStreamId

_STREAM_ID = re.compile(r"\A([0-9]{1,20})-([0-9]{1,20})\Z")
_UINT64 = 2**64

TOO_SLOW = "too slow"  # its queue filled: it does not keep up
SHUTTING_DOWN = "shutting down"
REVOKED = "token revoked"
CLOSED = "closed"  # its connection let go of it


@dataclass(frozen=True, slots=True, order=True)
class StreamId:
    ms: int
    seq: int

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}"


BEFORE_ALL = StreamId(0, 0)  # Redis never hands out 0-0: everything comes after it


def parse_stream_id(raw: str) -> StreamId:
    match = _STREAM_ID.match(raw)
    if match is None:
        raise InvalidStreamId("a resume point must be an event id such as 1700000000000-0")
    ms, seq = int(match[1]), int(match[2])
    if ms >= _UINT64 or seq >= _UINT64:
        raise InvalidStreamId("a resume point must be an event id such as 1700000000000-0")
    return StreamId(ms, seq)


@dataclass(frozen=True, slots=True)
class LiveNotification:
    stream_id: StreamId
    payload: bytes  # the notification as its owner reads it (NotificationPublic JSON)


@dataclass(frozen=True, slots=True)
class LiveFrame:
    data: bytes  # one server → client WebSocket message, JSON


LiveItem = LiveNotification | LiveFrame

ConnectionKind = Literal["sockets", "streams"]
