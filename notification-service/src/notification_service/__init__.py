"""notification-service: order and user events become mail, stored notifications and
live pushes (HTTP 8003, TCP feed 9000, UDP feed 9001).

domain/        notifications, recipients, the rules that make events into them, and
               the pure part of live push; no I/O
adapters/      PostgreSQL (SQLAlchemy + Alembic), RabbitMQ dead letters and replays,
               SMTP, Redis for live push and revocations, user-service (gRPC)
entrypoints/   the events consumer, internal HTTP API with SSE and WebSocket, the raw
               TCP and UDP feeds, command line
bootstrap.py   builds the adapters, wires them to the domain, runs the workers
config.py      Settings, read from the environment
__main__.py    ``python -m notification_service``: the command line
"""
