"""user-service's adapters: the domain's ports on real infrastructure.

repository.py   SqlUserRepository: users on PostgreSQL, each change with its event in the outbox
orm.py          the users table, as queries see it
passwords.py    Argon2PasswordHasher: argon2id, off the event loop
tokens.py       RsaAccessTokenIssuer: RS256 access tokens with a kid, and their JWKS
errors.py       UserStoreError: the database did not do what was asked
migrations/     Alembic: the users table, the outbox
"""
