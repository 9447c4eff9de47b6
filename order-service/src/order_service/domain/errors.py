"""What can go wrong with an order.

OrderError
 ├── InvalidOrder           items, quantities, prices or a reason break a rule (422)
 ├── OrderNotFound          no such order, or another user's (404)
 ├── InvalidTransition      the order's status does not allow this (409)
 ├── VersionMismatch        If-Match named another version than the order's (412)
 ├── IdempotencyKeyReused   the key was used before with another request body (422)
 ├── UserMayNotOrder        the user is unknown or not active (422)
 ├── PermissionDenied       the caller's role does not allow this (403)
 ├── ConcurrencyConflict    another change came first and retries ran out (409)
 ├── VersionNotReached      a read asked for a version the order does not have (412)
 ├── OrderStoreUnavailable  the event store did not answer in time (503)
 ├── UserCheckUnavailable   user-service did not answer, or its breaker is open (503)
 ├── ParkedEventNotFound    no such parked event (404)
 └── ParkedEventStillFails  a replayed parked event failed again and stays parked (409)
"""


class OrderError(Exception):
    """Base of every error the order domain raises."""


class InvalidOrder(OrderError):
    """The order's content breaks a rule."""


class OrderNotFound(OrderError):
    """No such order, or one the caller may not see."""


class InvalidTransition(OrderError):
    """The order cannot move from its status to the one asked for."""


class VersionMismatch(OrderError):
    """The caller changed an order at a version it no longer has."""


class IdempotencyKeyReused(OrderError):
    """An Idempotency-Key came back with another request than the first time."""


class UserMayNotOrder(OrderError):
    """The user is unknown or not active."""


class PermissionDenied(OrderError):
    """The caller may see the order but not do this to it."""


class ConcurrencyConflict(OrderError):
    """Another change to the order was recorded first (409 when retries run out)."""


class VersionNotReached(OrderError):
    """A read asked for a version newer than the order's (``min_version``)."""


class OrderStoreUnavailable(OrderError):
    """The event store did not answer, or not within the deadline."""


class UserCheckUnavailable(OrderError):
    """user-service could not be asked about the user: down, too slow, or its breaker is open."""


class ParkedEventNotFound(OrderError):
    """No event of the orders projection is parked with this id."""


class ParkedEventStillFails(OrderError):
    """The projection failed on the parked event again; it stays parked."""
