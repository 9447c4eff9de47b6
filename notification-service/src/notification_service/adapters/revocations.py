"""Live connections end when their user's tokens are revoked (deleted, suspended,
roles changed), on every instance that holds one.

    gateway ── revoke: SET the mark + PUBLISH "<user> <mark>" (one script) ──▶ Redis
                                                                                │
    LiveHub's pub/sub connection, on every instance ◀── <prefix>:revocations ───┘
        │ heard: the user's connections here with a token issued at or before the
        ▼ mark end (domain.live_connections.OpenConnections)
    a WebSocket (1008), an SSE stream, a TCP client, a UDP peer

Nothing is missed: a connection is registered before the mark is read once
(``watch``), so a revocation announced before it is in the mark and one announced
after it is heard; and after every (re)subscription, when announcements may have
been lost, the marks of every user connected here are read again (``caught_up``).
"""

import logging
from collections.abc import Callable

from redis.exceptions import RedisError

from interchange_common.actors import SignedInUser
from interchange_common.revocations import MalformedRevocation, RedisRevocations, Revocation
from notification_service.adapters.errors import LiveUnavailable
from notification_service.domain.live_connections import OpenConnections

_log = logging.getLogger(__name__)


class RedisRevocationWatch:
    """The domain's RevocationWatch, and a listener on LiveHub's pub/sub connection."""

    def __init__(self, *, revocations: RedisRevocations, connections: OpenConnections) -> None:
        self._revocations = revocations
        self._connections = connections

    @property
    def channel(self) -> bytes:
        return self._revocations.channel

    @property
    def watched(self) -> int:
        """The connections watched here now."""
        return len(self._connections)

    async def watch(self, *, user: SignedInUser, end: Callable[[], None]) -> Callable[[], None]:
        forget = self._connections.add(user_id=user.user_id, issued_at=user.issued_at, end=end)
        try:
            since = await self._revocations.revoked_since(user_id=user.user_id)
        except RedisError as e:
            # As at the gateway: let it through (it still expires); the next
            # resubscription's catch-up reads the mark again.
            _log.warning("revocations unavailable, connection not checked", extra={"error": type(e).__name__})
            return forget
        except BaseException:
            forget()
            raise
        if since is not None:
            self._end(Revocation(user_id=user.user_id, at=since))
        return forget

    def heard(self, data: bytes) -> None:
        try:
            revocation = Revocation.parse(data)
        except MalformedRevocation:
            _log.warning("malformed revocation ignored")
            return
        self._end(revocation)

    async def caught_up(self) -> None:
        """After a (re)subscription: end what an announcement lost meanwhile would have."""
        try:
            marks = await self._revocations.marks(user_ids=self._connections.users())
        except RedisError as e:
            raise LiveUnavailable("could not read the revocation marks") from e
        for revocation in marks:
            self._end(revocation)

    def _end(self, revocation: Revocation) -> None:
        ended = self._connections.revoke(user_id=revocation.user_id, revoked_at=revocation.at)
        if ended:
            _log.info(
                "live connections of a revoked token ended", extra={"user_id": str(revocation.user_id), "count": ended}
            )
