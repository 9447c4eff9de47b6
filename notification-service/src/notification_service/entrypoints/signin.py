"""How the raw feeds (TCP and UDP) sign users in: an access token in, a user out."""

from collections.abc import Awaitable, Callable

from interchange_common.actors import SignedInUser

Authenticate = Callable[[str], Awaitable[SignedInUser]]


class Rejected(Exception):
    """The token did not verify (raised by an ``Authenticate``)."""
