"""Failures of the infrastructure behind the event store's adapters.

EventStorageUnavailable   PostgreSQL did not answer or failed (driver errors wrapped)
PublishFailed             RabbitMQ refused, returned or did not confirm a message
"""


class EventStorageUnavailable(Exception):
    """The database failed; the driver's error is the cause."""


class PublishFailed(Exception):
    """A message was not confirmed by the broker (or came back unroutable)."""
