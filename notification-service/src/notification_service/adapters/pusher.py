"""Pushes the live outbox into Redis: every committed notification reaches its user's
stream, and the live channel, exactly once, even across crashes.

    LivePushDispatcher   a background task, like the mail dispatcher: takes the oldest
                         notifications with pushed_at NULL under row locks (FOR UPDATE
                         SKIP LOCKED: with several instances, each has one pusher), runs
                         the push script for each (LiveHub.push), and sets pushed_at in
                         the same transaction. LISTEN wakes it right after the commit
                         that added a notification (another instance's commit, a moment
                         later: adapters.listening); it also polls, in case a NOTIFY was
                         missed while it was reconnecting.

A crash after the script ran and before pushed_at committed leaves the row pending; the
next run of the script finds the notification's "pushed" marker and adds nothing, so
the stream holds it once and the live channel heard it once.
"""

import logging
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import orjson

from interchange_common import tracing
from interchange_common.tasks import run_forever
from notification_service.adapters.listening import drain_when_notified
from notification_service.adapters.redis_fanout import LiveHub
from notification_service.adapters.store import LIVE_CHANNEL
from notification_service.domain.model import Notification

_log = logging.getLogger(__name__)

Render = Callable[[Notification], bytes]


def _notification_of(row: Any) -> Notification:
    data = row["data"]
    return Notification(
        id=row["id"],
        user_id=row["user_id"],
        type=row["type"],
        title=row["title"],
        body=row["body"],
        data=orjson.loads(data) if isinstance(data, str | bytes) else dict(data),
        event_id=row["event_id"],
        created_at=row["created_at"],
    )


class LivePushDispatcher:
    def __init__(
        self,
        *,
        dsn: str,
        hub: LiveHub,
        render: Render,
        poll_seconds: float = 5.0,
        batch_size: int = 100,
        instance: str = "",
    ) -> None:
        self._dsn = dsn
        self._instance = instance  # whose NOTIFYs wake it at once (adapters.listening)
        self._hub = hub
        self._render = render
        self._poll = poll_seconds
        self._batch = batch_size

    async def run(self) -> None:
        await run_forever(name="live pusher", session=self._session)

    async def _session(self, connected: Callable[[], None]) -> None:
        await drain_when_notified(
            dsn=self._dsn, channel=LIVE_CHANNEL, drain=self._drain, connected=connected, instance=self._instance
        )

    async def _drain(self, conn: asyncpg.Connection) -> float:
        while await self.push_pending(conn) == self._batch:
            pass
        return self._poll

    async def push_pending(self, conn: asyncpg.Connection) -> int:
        """Push one batch of pending notifications, oldest first; how many were taken."""
        async with conn.transaction():
            rows = await conn.fetch(
                "SELECT id, user_id, type, title, body, data, event_id, created_at, traceparent FROM notifications"
                " WHERE pushed_at IS NULL ORDER BY created_at, id LIMIT $1 FOR UPDATE SKIP LOCKED",
                self._batch,
            )
            pushed: list[uuid.UUID] = []
            for row in rows:
                notification = _notification_of(row)
                # In the trace of the event that made the notification; the instances
                # that deliver it continue from this span.
                with tracing.continued_span("push live", parent=row["traceparent"], kind=tracing.SpanKind.PRODUCER):
                    stream_id, added = await self._hub.push(
                        notification_id=notification.id,
                        user_id=notification.user_id,
                        payload=self._render(notification),
                        traceparent=tracing.current_traceparent(),
                    )
                pushed.append(notification.id)
                _log.info(
                    "notification pushed live",
                    extra={"notification_id": str(notification.id), "stream_id": str(stream_id), "added": added},
                )
            if pushed:
                await conn.execute("UPDATE notifications SET pushed_at = now() WHERE id = ANY($1::uuid[])", pushed)
        return len(rows)
