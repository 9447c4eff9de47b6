"""This instance's own copy of every revocation mark: what it refuses by when Redis
cannot say (it does not answer, or it restarted and has not had its marks back yet).

    RevocationMarks   user → the time before which their tokens are refused (the later
                      mark wins); ``loaded`` once a whole list from user-service is in

Marks come from user-service's list (whole at start-up and at each reload of Redis,
then what changed since, every few seconds) and from the user events this instance
consumes. A mark is kept while a token issued before it may still be alive; one that
is older than that refuses nothing any more and is dropped (``prune``).
"""

import uuid
from collections.abc import Iterable

from interchange_common.revocations import Revocation


class RevocationMarks:
    def __init__(self, *, ttl_seconds: int) -> None:
        self._ttl = ttl_seconds
        self._marks: dict[uuid.UUID, float] = {}
        self._loaded = False

    @property
    def loaded(self) -> bool:
        """Has a whole list of the marks been taken in? Until then the copy knows only
        the events this instance consumed, and cannot stand in for Redis."""
        return self._loaded

    def __len__(self) -> int:
        return len(self._marks)

    def note(self, *, user_id: uuid.UUID, at: float) -> None:
        """One mark (an event's, or one from a list): kept unless a later one is held."""
        if at > self._marks.get(user_id, float("-inf")):
            self._marks[user_id] = at

    def take_in(self, *, marks: Iterable[Revocation], whole: bool) -> None:
        """Marks from user-service; ``whole``: every live mark it holds, so the copy is
        loaded. Merged, never replaced: a mark an event brought while the list was on
        its way is newer than the list and stays."""
        for mark in marks:
            self.note(user_id=mark.user_id, at=mark.at)
        if whole:
            self._loaded = True

    def revoked_since(self, *, user_id: uuid.UUID) -> float | None:
        """Tokens of the user issued at or before this time are refused; None: none are."""
        return self._marks.get(user_id)

    def is_revoked(self, *, user_id: uuid.UUID, issued_at: float) -> bool:
        since = self._marks.get(user_id)
        return since is not None and issued_at <= since

    def prune(self, *, now: float) -> None:
        """Drop the marks every token they refuse has outlived."""
        cutoff = now - self._ttl
        for user_id in [user_id for user_id, at in self._marks.items() if at < cutoff]:
            del self._marks[user_id]
