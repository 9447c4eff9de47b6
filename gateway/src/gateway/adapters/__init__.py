"""The gateway's adapters: JWKS token verification, Redis rate limiting, upstream HTTP."""
