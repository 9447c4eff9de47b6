"""Schemathesis hooks for devstack.fuzzing: the fuzzer signs in as a user of its own.

Loaded by the schemathesis CLI (SCHEMATHESIS_HOOKS), which registers the auth
provider on import; the gateway's address comes in FUZZ_GATEWAY_URL.
"""

import os
import threading
from typing import Any

import httpx
import schemathesis

from devstack.accounts import Account, register
from devstack.testing import gateway_client

GATEWAY_URL_VARIABLE = "FUZZ_GATEWAY_URL"


@schemathesis.auth(refresh_interval=1)
class FuzzUser:
    """A registered user's bearer token. The fuzzer may delete or change that very
    user (it follows /api/users/me to DELETE /api/users/{user_id}): then a new user
    signs in, at most a second later."""

    def __init__(self) -> None:
        self._gateway: httpx.Client | None = None
        self._account: Account | None = None
        self._lock = threading.Lock()

    def get(self, case: Any, ctx: Any) -> str:
        with self._lock:
            if self._gateway is None:
                self._gateway = gateway_client(os.environ[GATEWAY_URL_VARIABLE], timeout=10)
            if self._account is None or self._gateway.get("/api/users/me", headers=self._account.headers).is_error:
                self._account = register(self._gateway, name="Fuzzer")
            return self._account.token

    def set(self, case: Any, data: str, ctx: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}
