"""Exceptions raised by the internal library.

InterchangeCommonError
 ├── ConfigurationError       settings that must not be used (placeholder secret, …)
 ├── DatabaseUnavailable      PostgreSQL could not serve the work now (interchange_common.database)
 ├── ServiceAuthError         a service token that is missing, invalid or not for us
 ├── UndecodableRequest       gRPC request bytes that are not the method's message
 └── UserLookupError          asking user-service about a user (interchange_common.users)
      ├── UserNotFound            no such user: an answer
      └── UserServiceUnavailable  no answer: down, too slow, or its breaker is open
"""


class InterchangeCommonError(Exception):
    """Base of every error the internal library raises."""


class ConfigurationError(InterchangeCommonError):
    """Settings that a service must refuse to start with."""


class DatabaseUnavailable(InterchangeCommonError):
    """PostgreSQL could not serve the work now; the same request may succeed later."""


class ServiceAuthError(InterchangeCommonError):
    """A service token is missing, invalid, expired or addressed to another service."""


class UndecodableRequest(InterchangeCommonError):
    """The bytes of a gRPC request do not decode as the method's request message."""


class UserLookupError(InterchangeCommonError):
    """Base of what asking user-service about a user can end in."""


class UserNotFound(UserLookupError):
    """user-service knows no user with this id."""


class UserServiceUnavailable(UserLookupError):
    """user-service did not answer, not within the deadline, or its breaker is open."""
