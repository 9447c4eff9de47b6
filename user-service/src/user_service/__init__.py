"""user-service: users, passwords and access tokens (HTTP 8001, gRPC 50051).

domain/        users, the rules about them, and the events their changes record; no I/O
adapters/      PostgreSQL (SQLAlchemy + Alembic) with the outbox, argon2 hashing, RS256 tokens
entrypoints/   internal HTTP API, gRPC user.UserService, command line
bootstrap.py   builds the adapters and wires them to the domain
config.py      Settings, read from the environment
__main__.py    ``python -m user_service``: the command line
"""
