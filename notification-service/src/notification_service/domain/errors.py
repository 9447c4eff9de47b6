"""What can go wrong in notification-service (the adapters' failures are here too).

NotificationServiceError
 ├── InvalidMessage            a message of a known type whose body does not fit it
 ├── RecipientUnknown          an order event for a user not heard of (yet)
 ├── OrderUnknown              a change to an order whose order.placed has not arrived (yet)
 ├── InvalidRequest            a query value breaks a rule (page, limit)
 ├── NotSignedIn               no end user behind the call
 ├── PermissionDenied          the actor may not do this (admin only)
 ├── DeadLetterNotFound        no dead letter with that id
 ├── InvalidStreamId           a resume point that is not a stream id (Last-Event-ID)
 ├── LiveMessageRejected       a WebSocket message that breaks the protocol or a room rule
 ├── TooManyStreams            the user already has as many event streams as allowed
 ├── SubscriptionEnded         a live subscription is over (too slow, revoked, closed, shutting down)
 └── (adapters.errors)         NotificationStoreError, ReplayFailed, MailServerUnavailable,
                               LiveUnavailable, …
"""

import math


class NotificationServiceError(Exception):
    """Base of every error notification-service raises."""


class InvalidMessage(NotificationServiceError):
    """A message of a known type whose body does not have the shape of that type."""


class RecipientUnknown(NotificationServiceError):
    """An order event names a user whose user.created has not been seen yet."""


class OrderUnknown(NotificationServiceError):
    """An order event names an order whose order.placed has not been seen yet."""


class InvalidRequest(NotificationServiceError):
    """A request value breaks one of the rules (page, limit)."""


class NotSignedIn(NotificationServiceError):
    """The call carries no end user, and the route is about one."""


class PermissionDenied(NotificationServiceError):
    """The actor may not do this."""


class DeadLetterNotFound(NotificationServiceError):
    """No dead letter has this id (or it was replayed or discarded meanwhile)."""


class InvalidStreamId(NotificationServiceError):
    """A resume point (Last-Event-ID) that is not a stream id such as 1700000000000-0."""


class LiveMessageRejected(NotificationServiceError):
    """A WebSocket message that breaks the protocol or a room rule; the socket stays open."""


class TooManyStreams(NotificationServiceError):
    """The user already holds as many Server-Sent Event streams as allowed (429)."""

    def __init__(self, *, limit: int, frees_in_seconds: float) -> None:
        super().__init__(f"at most {limit} event streams per user")
        self.limit = limit
        # Whole seconds and never 0 (Retry-After): a slot that just freed is worth a retry.
        self.retry_after_seconds = max(1, math.ceil(frees_in_seconds))


class SubscriptionEnded(NotificationServiceError):
    """A live subscription is over; ``reason`` says why (domain.live_push: TOO_SLOW, REVOKED, …)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
