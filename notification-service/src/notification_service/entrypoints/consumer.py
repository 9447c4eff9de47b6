"""The events consumer's handler: one RabbitMQ delivery → Notifications.handle.

The common Consumer acks after this returns and sends the message down the retry
path when it raises. A notification it commits reaches live subscribers through the
live outbox (adapters.pusher), not from here: a crash after the commit loses nothing.
The handler's log lines carry the event's correlation id as their request id, so a
request can be followed into the mail it caused.
"""

import logging
import os
import signal
from typing import Any

import orjson
from prometheus_client import Counter

from interchange_common import tracing
from interchange_common.messaging import Delivery, Handler
from interchange_common.requestctx import accept_request_id, request_id_var
from notification_service.domain.errors import InvalidMessage
from notification_service.domain.usecases import Notifications

_log = logging.getLogger(__name__)

MESSAGES = Counter("notification_messages_total", "Messages handled, by outcome", ["outcome"])


def _correlation_id(body: Any) -> str | None:
    if not isinstance(body, dict):
        return None
    metadata = body.get("metadata")
    offered = body.get("correlation_id") or (metadata.get("correlation_id") if isinstance(metadata, dict) else None)
    return offered if isinstance(offered, str) else None


def message_handler(*, notifications: Notifications, crash_after_commit: bool = False) -> Handler:

    async def handle(delivery: Delivery) -> None:
        try:
            body = delivery.json()
        except orjson.JSONDecodeError as e:
            MESSAGES.labels("failed").inc()
            raise InvalidMessage("the body is not JSON") from e
        reset = request_id_var.set(accept_request_id(offered=_correlation_id(body)))
        try:
            fallback_id = body.get("id") if isinstance(body, dict) else None
            try:
                with tracing.span(f"notify {delivery.routing_key}") as span:
                    handled = await notifications.handle(
                        message_id=delivery.message_id or (fallback_id if isinstance(fallback_id, str) else ""),
                        routing_key=delivery.routing_key,
                        body=body,
                    )
                    span.set_attribute("interchange.outcome", handled.outcome.value)
            except Exception as e:
                MESSAGES.labels("failed").inc()
                _log.warning(
                    "message not handled",
                    extra={"message_id": delivery.message_id, "attempt": delivery.attempt, "error": type(e).__name__},
                )
                raise
            MESSAGES.labels(handled.outcome.value).inc()
            _log.info(
                "message handled",
                extra={
                    "message_id": delivery.message_id,
                    "routing_key": delivery.routing_key,
                    "outcome": handled.outcome.value,
                    "mail_queued": handled.mail is not None,
                },
            )
            if crash_after_commit and handled.mail is not None:
                _log.critical("fault injection: killing the process after the commit, before the ack")
                os.kill(os.getpid(), signal.SIGKILL)
        finally:
            request_id_var.reset(reset)

    return handle
