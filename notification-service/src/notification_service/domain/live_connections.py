"""This instance's live connections by user (OpenConnections): which of them a revocation ends. Pure."""

import uuid
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class _Open:
    issued_at: float
    end: Callable[[], None]


class OpenConnections:
    """This instance's live connections (WebSockets, SSE streams, TCP clients, UDP
    peers) by user, each with the issue time (iat) of the token it was opened with
    and how to end it. How a connection ends is its own business (a close code, an
    error line); here is only who ends when a user's tokens are revoked."""

    def __init__(self) -> None:
        self._by_user: dict[uuid.UUID, dict[object, _Open]] = {}

    def add(self, *, user_id: uuid.UUID, issued_at: float, end: Callable[[], None]) -> Callable[[], None]:
        """Remember a connection; the function returned forgets it (call it however
        the connection ends)."""
        key = object()
        self._by_user.setdefault(user_id, {})[key] = _Open(issued_at=issued_at, end=end)

        def forget() -> None:
            mine = self._by_user.get(user_id)
            if mine is not None:
                mine.pop(key, None)
                if not mine:
                    del self._by_user[user_id]

        return forget

    def revoke(self, *, user_id: uuid.UUID, revoked_at: float) -> int:
        """End the user's connections whose token was issued at or before
        ``revoked_at`` (an iat is whole seconds: a token of the same second as the
        revocation counts as revoked, as at the gateway); how many it ended. Each is
        forgotten just before its ``end`` runs, so it is ended once."""
        mine = self._by_user.get(user_id)
        if not mine:
            return 0
        ended = 0
        for key in [key for key, held in mine.items() if held.issued_at <= revoked_at]:
            held = mine.pop(key, None)
            if held is not None:
                ended += 1
                held.end()
        if not mine and self._by_user.get(user_id) is mine:
            del self._by_user[user_id]
        return ended

    def users(self) -> frozenset[uuid.UUID]:
        """The users who hold a connection here."""
        return frozenset(self._by_user)

    def __len__(self) -> int:
        return sum(len(mine) for mine in self._by_user.values())
