"""Tokens that stop working before they expire: a deleted or suspended user's.

user-service keeps a mark per user ("tokens issued at or before this time are
refused") in its database, written with the change that revokes, and publishes
user.updated and user.deleted. The gateway consumes those events (one queue for every
gateway instance) and writes the mark in Redis, so that every instance refuses the
tokens at once. The mark (interchange_common.revocations) lives as long as a token
can; the TCP and UDP feeds of notification-service read the same marks.

Redis keeps nothing on disk: after it restarts the marks are gone. So each instance
also keeps a copy of every mark in memory (domain.revocations.RevocationMarks), and:

    RevocationHandler       the consumer's handler: user events → the copy and Redis
    UserServiceRevocations  user-service's list of marks (GET /internal/revocations)
    RevocationKeeper        every second or so: is Redis's sentinel there? If not (a
                            restart), or after Redis did not answer, every mark from
                            user-service goes back into Redis (one script, announced
                            on the channel). Every few seconds the copy takes in what
                            user-service has that is new.

Each request's check of the mark is made with its rate-limit count, in one script
(ratelimiter.RedisCallerCheck), after a look at the copy; when Redis does not answer,
the copy decides alone.
"""

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol
from urllib.parse import urlencode

import orjson
from redis.exceptions import RedisError

from gateway.adapters.upstream import UpstreamClient
from gateway.domain.errors import RevocationsUnavailable, UpstreamFailed
from gateway.domain.model import revoked_at
from gateway.domain.revocations import RevocationMarks
from interchange_common.messaging import Delivery
from interchange_common.revocations import RedisRevocations, Revocation
from interchange_common.servicejwt import ServiceTokenIssuer

_log = logging.getLogger(__name__)

REVOCATIONS_PATH = "/internal/revocations"
# An incremental list starts this long before the end of the previous one: a mark is
# stamped when its change starts and seen once that commits (well within a request's
# deadline), and the two clocks are one machine's or close.
_OVERLAP = timedelta(seconds=60)


class RevocationHandler:
    def __init__(self, *, revocations: RedisRevocations, marks: RevocationMarks | None = None) -> None:
        self._revocations = revocations
        self._marks = marks

    async def __call__(self, delivery: Delivery) -> None:
        event = delivery.json()
        at = revoked_at(event) if isinstance(event, dict) else None
        if at is None:
            return
        user_id = uuid.UUID(str(event["data"]["id"]))
        if self._marks is not None:
            # First here: while Redis does not answer the message is retried, and this
            # instance refuses the tokens meanwhile.
            self._marks.note(user_id=user_id, at=at)
        await self._revocations.revoke(user_id=user_id, at=at)
        _log.info("tokens revoked", extra={"user_id": str(user_id), "event": event.get("type")})


@dataclass(frozen=True, slots=True)
class RevocationList:
    """Marks user-service holds; ``as_of``: its clock when it read them."""

    marks: list[Revocation]
    as_of: datetime


class RevocationSource(Protocol):
    async def fetch(self, *, since: datetime | None) -> RevocationList:
        """Every live mark, or those stamped at or after ``since``; RevocationsUnavailable."""


def _parse_time(value: object) -> datetime:
    if not isinstance(value, str):
        raise ValueError("a time is an RFC 3339 string")
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError("a time names its offset")
    return parsed


def parse_revocation_list(body: bytes) -> RevocationList:
    """user-service's answer: ``{"items": [{"user_id", "revoked_at"}], "as_of"}``."""
    try:
        document = orjson.loads(body)
        items = document["items"]
        if not isinstance(items, list):
            raise TypeError("items is not a list")
        marks = [
            Revocation(user_id=uuid.UUID(str(item["user_id"])), at=_parse_time(item["revoked_at"]).timestamp())
            for item in items
        ]
        return RevocationList(marks=marks, as_of=_parse_time(document["as_of"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise RevocationsUnavailable("user-service's revocation list is malformed") from e


class UserServiceRevocations:
    """GET /internal/revocations on user-service, through the gateway's upstream client
    (balancing, failover, breaker) with the gateway's service token."""

    def __init__(
        self, *, upstream: UpstreamClient, upstream_name: str, audience: str, issuer: ServiceTokenIssuer
    ) -> None:
        self._upstream = upstream
        self._name = upstream_name
        self._audience = audience
        self._issuer = issuer

    async def fetch(self, *, since: datetime | None) -> RevocationList:
        query = "" if since is None else urlencode({"since": since.astimezone(UTC).isoformat()})
        try:
            answer = await self._upstream.forward(
                upstream=self._name,
                method="GET",
                path=REVOCATIONS_PATH,
                query=query,
                headers={"authorization": self._issuer.authorization_for(audience=self._audience)},
                body=b"",
            )
        except UpstreamFailed as e:
            raise RevocationsUnavailable(f"{self._audience} did not answer") from e
        if answer.status != 200:
            raise RevocationsUnavailable(f"{self._audience} answered {REVOCATIONS_PATH} with {answer.status}")
        return parse_revocation_list(answer.body)


class RevocationKeeper:
    """Keeps Redis's marks whole and this instance's copy current; ``check`` is run
    every second or so (bootstrap).

    Each check asks Redis one EXISTS (the sentinel), whatever the traffic: a restart is
    seen within a check's interval, by this instance's requests and by
    notification-service's sign-ins alike, and no request pays for it. Then:

    - the sentinel is missing (Redis restarted, or never had them), or Redis has not
      answered since the last check (events may have been retried past it, or it lost
      them): every live mark from user-service is written back (``restore``: the later
      mark wins against an event's written meanwhile, each announced, so that a live
      connection signed in with a revoked token in between ends now) and the copy
      takes them in. Several instances doing it at once write the same marks.
    - Redis does not answer: the copy is brought up to date at once, then every
      ``refresh_seconds``; requests are checked against it (RedisCallerCheck).
    - otherwise, every ``refresh_seconds``, the copy takes in the marks user-service
      stamped since its last list (minus an overlap): one indexed read, usually empty.

    A list user-service cannot give now is asked for again at the next check. Each
    change of state (Redis, user-service) is logged once, not at every check."""

    def __init__(
        self,
        *,
        revocations: RedisRevocations,
        marks: RevocationMarks,
        source: RevocationSource,
        refresh_seconds: float,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._revocations = revocations
        self._marks = marks
        self._source = source
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._monotonic = monotonic
        self._restore_needed = True  # at start-up: whatever Redis holds, write them all
        self._redis_answers: bool | None = None
        self._source_answers: bool | None = None
        self._since: datetime | None = None
        self._refreshed_at = float("-inf")

    @property
    def restored(self) -> bool:
        """Has Redis had every mark back since it was last seen empty or silent?"""
        return not self._restore_needed

    async def check(self) -> None:
        try:
            loaded = await self._revocations.loaded()
        except RedisError as e:
            self._redis_silent(e)
            await self._refresh()
            return
        if self._redis_answers is False:
            _log.info("revocations: redis answers again")
        self._redis_answers = True
        if self._restore_needed or not loaded:
            await self._restore()
        elif self._monotonic() - self._refreshed_at >= self._refresh_seconds:
            await self._refresh()

    def _redis_silent(self, error: RedisError) -> None:
        self._restore_needed = True
        if self._redis_answers is not False:
            _log.warning(
                "revocations: redis unavailable, checking tokens against this instance's copy",
                extra={"error": type(error).__name__, "marks": len(self._marks), "loaded": self._marks.loaded},
            )
            self._refreshed_at = float("-inf")  # bring the copy up to date at once
        self._redis_answers = False

    async def _restore(self) -> None:
        listed = await self._fetch(since=None)
        if listed is None:
            return
        self._marks.take_in(marks=listed.marks, whole=True)
        try:
            written = await self._revocations.restore(marks=listed.marks, now=self._clock())
        except RedisError as e:
            self._redis_silent(e)
            return
        self._restore_needed = False
        self._marks.prune(now=self._clock())
        _log.info("revocation marks restored in redis", extra={"marks": written})

    async def _refresh(self) -> None:
        if self._marks.loaded and self._monotonic() - self._refreshed_at < self._refresh_seconds:
            return
        whole = not self._marks.loaded
        listed = await self._fetch(since=None if whole else self._since)
        if listed is None:
            return
        self._marks.take_in(marks=listed.marks, whole=whole)
        self._marks.prune(now=self._clock())

    async def _fetch(self, *, since: datetime | None) -> RevocationList | None:
        """The list, or None (logged when user-service stops answering) to try again later."""
        try:
            listed = await self._source.fetch(since=since)
        except RevocationsUnavailable as e:
            if self._source_answers is not False:
                _log.warning("revocations: user-service's list unavailable", extra={"error": str(e)})
            self._source_answers = False
            return None
        if self._source_answers is False:
            _log.info("revocations: user-service's list available again")
        self._source_answers = True
        self._since = listed.as_of - _OVERLAP
        self._refreshed_at = self._monotonic()
        return listed
