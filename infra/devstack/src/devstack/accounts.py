"""Signed-in users for tests that drive a stack through its gateway (e2e, fault, bench)."""

import uuid
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class Account:
    id: str
    email: str
    password: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def unique_email(tag: str = "user") -> str:
    return f"{tag}-{uuid.uuid4().hex[:12]}@example.com"


def login(gateway: httpx.Client, *, email: str, password: str) -> str:
    response = gateway.post("/api/auth/token", json={"email": email, "password": password})
    if response.status_code != 200:
        raise AssertionError(f"log in as {email}: {response.status_code} {response.text}")
    return str(response.json()["access_token"])


def register(gateway: httpx.Client, *, name: str = "Test User") -> Account:
    """A new user, registered and signed in."""
    email, password = unique_email(), f"pw-{uuid.uuid4().hex}"
    response = gateway.post("/api/auth/register", json={"name": name, "email": email, "password": password})
    if response.status_code != 201:
        raise AssertionError(f"register {email}: {response.status_code} {response.text}")
    return Account(response.json()["id"], email, password, login(gateway, email=email, password=password))


def sign_in(gateway: httpx.Client, *, email: str, password: str) -> Account:
    """An existing user (the admin of .env, say), signed in."""
    token = login(gateway, email=email, password=password)
    me = gateway.get("/api/users/me", headers={"Authorization": f"Bearer {token}"})
    if me.status_code != 200:
        raise AssertionError(f"/api/users/me as {email}: {me.status_code} {me.text}")
    return Account(me.json()["id"], email, password, token)


def notifications_of(gateway: httpx.Client, account: Account) -> list[dict[str, Any]]:
    """Every notification of the account, read through GET /api/notifications page by page."""
    found: list[dict[str, Any]] = []
    page = 1
    while True:
        response = gateway.get("/api/notifications", params={"page": page, "limit": 100}, headers=account.headers)
        assert response.status_code == 200, response.text
        body = response.json()
        found += body["items"]
        if len(found) >= int(body["total"]) or not body["items"]:
            return found
        page += 1
