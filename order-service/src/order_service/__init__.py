"""order-service: orders as event-sourced aggregates, with a CQRS read model (HTTP 8002).

domain/        the order: commands decide events, events evolve state; no I/O
adapters/      event-store (gRPC), user-service (gRPC), the read model and
               idempotency keys on PostgreSQL, Alembic migrations
entrypoints/   internal HTTP API, command line
bootstrap.py   builds the adapters, wires them to the domain, runs the projection
config.py      Settings, read from the environment
__main__.py    ``python -m order_service``: the command line
"""
