"""Tokens that stop working before they expire: a deleted or suspended user's.

user-service publishes user.updated and user.deleted; the gateway consumes them (one
queue for every gateway instance) and records, per user, the time before which
their tokens are refused, in Redis, so that every instance refuses them at once.
The mark (interchange_common.revocations) lives as long as a token can; the TCP and
UDP feeds of notification-service read the same marks.

RevocationHandler  the consumer's handler: user events → revoke (domain.revoked_at)

Each request's check of the mark is made with its rate-limit count, in one script
(ratelimiter.RedisCallerCheck).
"""

import logging
import uuid

from gateway.domain.model import revoked_at
from interchange_common.messaging import Delivery
from interchange_common.revocations import RedisRevocations

_log = logging.getLogger(__name__)


class RevocationHandler:
    def __init__(self, *, revocations: RedisRevocations) -> None:
        self._revocations = revocations

    async def __call__(self, delivery: Delivery) -> None:
        event = delivery.json()
        at = revoked_at(event) if isinstance(event, dict) else None
        if at is None:
            return
        user_id = uuid.UUID(str(event["data"]["id"]))
        await self._revocations.revoke(user_id=user_id, at=at)
        _log.info("tokens revoked", extra={"user_id": str(user_id), "event": event.get("type")})
