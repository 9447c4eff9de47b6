"""user-service's adapters: PostgreSQL, argon2, RS256 tokens."""
