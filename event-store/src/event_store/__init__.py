"""event-store: the source of truth for event-sourced aggregates (HTTP 8004, gRPC 50054).

domain/        streams, expected versions, idempotent appends; no I/O
adapters/      PostgreSQL storage with its sequencer, in-memory storage,
               the RabbitMQ relay, Alembic migrations
entrypoints/   internal HTTP API (with SSE), gRPC eventstore.EventStore, command line
bootstrap.py   builds the adapters and wires them to the domain
config.py      Settings, read from the environment
__main__.py    ``python -m event_store``: the command line
"""
