"""user-service: users, passwords and access tokens.

domain/        users and the rules about them; no I/O
adapters/      PostgreSQL (SQLAlchemy + Alembic), argon2 hashing, RS256 tokens
entrypoints/   internal HTTP API, gRPC user.UserService, command line
bootstrap.py   builds the adapters and wires them to the domain
config.py      Settings, read from the environment
"""
