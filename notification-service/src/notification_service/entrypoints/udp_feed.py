"""The UDP feed on port 9001 (docs/api.md "Raw protocols"): one JSON object per datagram,
for devices that only want a nudge.

    {"type": "ping"}                      → {"type": "pong"}
    every valid datagram                  → {"type": "ack"} (with its "id" when it had one)
    {"type": "broadcast", "data", "token"} → {"type": "broadcast", "from", "data"} to the
                                            other authenticated clients seen recently
    a malformed or oversized datagram     → {"type": "error", "detail"}

A datagram that carries a valid access token ("token") marks its sender as that
user; unauthenticated senders get pong, ack and errors only. A client that has sent
nothing for ``forget_after_seconds`` (60) is forgotten and receives no broadcast. So
is one whose user's tokens are revoked (after {"type": "error", "detail": "token
revoked"}): it signs in again with a fresh token.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from interchange_common.actors import SignedInUser
from notification_service.domain.ports import RevocationWatch
from notification_service.entrypoints.signin import Authenticate, Rejected

_log = logging.getLogger(__name__)

Address = tuple[str, int]


@dataclass(eq=False)
class _Peer:
    last_seen: float
    user: SignedInUser | None = None
    unwatch: Callable[[], None] | None = field(default=None, repr=False)

    def sign_out(self) -> None:
        self.user = None
        unwatch, self.unwatch = self.unwatch, None
        if unwatch is not None:
            unwatch()


class UdpFeed(asyncio.DatagramProtocol):
    def __init__(
        self,
        *,
        authenticate: Authenticate,
        revocations: RevocationWatch | None = None,
        max_datagram_bytes: int = 8 * 1024,
        forget_after_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._authenticate = authenticate
        self._revocations = revocations
        self._max = max_datagram_bytes
        self._forget_after = forget_after_seconds
        self._clock = clock
        self._peers: dict[Address, _Peer] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self._work: set[asyncio.Task[None]] = set()

    async def start(self, *, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(host, port))
        _log.info("udp feed listening", extra={"port": self.port})

    @property
    def port(self) -> int:
        if self._transport is None:
            raise RuntimeError("the feed is not started")
        return int(self._transport.get_extra_info("sockname")[1])

    def peers(self) -> int:
        """Clients seen within the last ``forget_after_seconds``."""
        self._forget()
        return len(self._peers)

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        for peer in self._peers.values():
            peer.sign_out()
        self._peers.clear()
        if self._work:
            await asyncio.wait(self._work, timeout=5)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        if len(data) > self._max:
            self._send({"type": "error", "detail": f"a datagram is at most {self._max} bytes"}, addr)
            return
        try:
            message = orjson.loads(data)
        except orjson.JSONDecodeError:
            message = None
        if not isinstance(message, dict):
            self._send({"type": "error", "detail": "a datagram must be one JSON object"}, addr)
            return
        # Verifying a token may fetch keys: the rest happens in a task of its own.
        work = asyncio.get_running_loop().create_task(self._handle(message, addr))
        self._work.add(work)
        work.add_done_callback(self._work.discard)

    async def _handle(self, message: dict[str, Any], addr: Address) -> None:
        self._forget()
        peer = self._peers.setdefault(addr, _Peer(last_seen=self._clock()))
        peer.last_seen = self._clock()
        token = message.get("token")
        if isinstance(token, str) and token:
            try:
                user = await self._authenticate(token)
            except Rejected as e:
                self._send({"type": "error", "detail": f"not authenticated: {e}"}, addr)
                return
            if not await self._signed_in(peer, user, addr):
                return
        ack: dict[str, Any] = {"type": "ack"}
        if "id" in message:
            ack["id"] = message["id"]
        self._send(ack, addr)
        kind = message.get("type")
        if kind == "ping":
            self._send({"type": "pong"}, addr)
        elif kind == "broadcast":
            self._broadcast(peer, message.get("data"), addr)

    async def _signed_in(self, peer: _Peer, user: SignedInUser, addr: Address) -> bool:
        """Make ``user`` the peer's, watched for revocation; False when the peer is
        gone meanwhile (forgotten, or revoked already: it was told)."""
        unwatch = None
        if self._revocations is not None:
            unwatch = await self._revocations.watch(user=user, end=lambda: self._revoke(peer, addr))
        if self._peers.get(addr) is not peer:
            if unwatch is not None:
                unwatch()
            return False
        peer.sign_out()
        peer.user, peer.unwatch = user, unwatch
        return True

    def _revoke(self, peer: _Peer, addr: Address) -> None:
        peer.sign_out()
        if self._peers.get(addr) is peer:
            del self._peers[addr]
            self._send({"type": "error", "detail": "token revoked"}, addr)

    def _broadcast(self, peer: _Peer, data: Any, addr: Address) -> None:
        if peer.user is None or peer.user.expires_at <= time.time():
            self._send({"type": "error", "detail": "broadcasting needs a valid token"}, addr)
            return
        relay = {"type": "broadcast", "from": str(peer.user.user_id), "data": data}
        for other_addr, other in self._peers.items():
            if other_addr != addr and other.user is not None and other.user.expires_at > time.time():
                self._send(relay, other_addr)

    def _forget(self) -> None:
        horizon = self._clock() - self._forget_after
        for addr in [addr for addr, peer in self._peers.items() if peer.last_seen < horizon]:
            self._peers.pop(addr).sign_out()

    def _send(self, message: dict[str, Any], addr: Address) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(orjson.dumps(message), addr)
