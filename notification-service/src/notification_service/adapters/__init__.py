"""notification-service's adapters: the domain's ports on real infrastructure.

store.py         SqlInbox, SqlNotificationStore, SqlDeadLetterStore on PostgreSQL
orm.py           the tables, as queries see them
broker.py        DeadLetterConsumer and AmqpRepublisher: the dead-letter queue, replays
mail.py          MailDispatcher: the mail outbox over SMTP, retried with backoff
pusher.py        LivePushDispatcher: the live outbox into Redis, each notification once
redis_fanout.py  LiveHub, the LiveFanout: live push across instances through Redis streams and pub/sub
revocations.py   RedisRevocationWatch: live connections end when their user's tokens are revoked
listening.py     the outbox workers' session: LISTEN, and drain the table when notified
users.py         GrpcUserDirectory: a user asked of user-service (gRPC)
errors.py        the infrastructure's failures, under NotificationServiceError
migrations/      Alembic: processed messages, recipients, orders, notifications, mail, dead letters
"""
