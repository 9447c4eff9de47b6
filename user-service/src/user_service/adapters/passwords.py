"""Password hashing with argon2id (argon2-cffi), off the event loop."""

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError


class Argon2PasswordHasher:
    """argon2-cffi's defaults (RFC 9106 low-memory profile); each hash takes tens of ms,
    so it runs in a worker thread and the event loop keeps serving."""

    def __init__(self) -> None:
        self._hasher = PasswordHasher()

    async def hash(self, *, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, *, password_hash: str, password: str) -> bool:
        try:
            return await asyncio.to_thread(self._hasher.verify, password_hash, password)
        except (VerificationError, InvalidHashError):
            return False
