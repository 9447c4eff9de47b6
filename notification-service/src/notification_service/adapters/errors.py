"""Failures of the infrastructure behind notification-service's adapters.

NotificationServiceError (domain.errors)
 ├── NotificationStoreError   the database did not do what was asked (driver errors wrapped)
 ├── ReplayFailed             the broker did not confirm a replayed message
 ├── MailServerUnavailable    the SMTP server could not take a mail now
 ├── UserDirectoryUnavailable user-service could not be asked about a user
 ├── ConsumerDisconnected     a consumer is not connected to the broker (a health probe)
 └── LiveUnavailable          Redis (live fan-out and history) could not be used now

A database that cannot serve the work now raises interchange_common's DatabaseUnavailable.
"""

from notification_service.domain.errors import NotificationServiceError


class NotificationStoreError(NotificationServiceError):
    """The database failed; the original driver error is the cause."""


class ReplayFailed(NotificationServiceError):
    """The broker did not confirm a replayed message; the dead letter is kept."""


class MailServerUnavailable(NotificationServiceError):
    """The SMTP server could not take a mail now; it stays queued and is tried again."""


class UserDirectoryUnavailable(NotificationServiceError):
    """user-service did not answer a lookup in time; the message is retried."""


class ConsumerDisconnected(NotificationServiceError):
    """A consumer is not connected to the broker at the moment."""


class LiveUnavailable(NotificationServiceError):
    """Redis did not do what was asked (fan-out, history, socket count); the cause is kept."""
