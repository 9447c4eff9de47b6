"""Failures of the infrastructure behind the event store's adapters.

    EventStorageUnavailable   PostgreSQL did not answer or failed (driver errors wrapped)

A message RabbitMQ does not confirm raises interchange_common.messaging.PublishFailed.
"""


class EventStorageUnavailable(Exception):
    """The database failed; the driver's error is the cause."""
