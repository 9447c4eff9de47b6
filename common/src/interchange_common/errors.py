"""Exceptions raised by the internal library.

InterchangeCommonError
 ├── ConfigurationError       settings that must not be used (placeholder secret, …)
 └── ServiceAuthError         a service token that is missing, invalid or not for us
"""


class InterchangeCommonError(Exception):
    """Base of every error the internal library raises."""


class ConfigurationError(InterchangeCommonError):
    """Settings that a service must refuse to start with."""


class ServiceAuthError(InterchangeCommonError):
    """A service token is missing, invalid, expired or addressed to another service."""
