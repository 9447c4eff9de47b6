"""Helpers the test suites share: free ports, waiting with a deadline, throwaway databases."""

import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import aio_pika

from devstack.infra import create_databases, drop_databases

T = TypeVar("T")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_id() -> str:
    """A short random id that names one test run's databases, keys and queues."""
    return secrets.token_hex(4)


def wait_for(condition: Callable[[], T | None], *, timeout: float, interval: float = 0.05, what: str = "") -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(interval)


async def delete_exchange(*, amqp_url: str, exchange: str) -> None:
    """Remove a test run's events exchange, with its alternate exchange and queue."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        await channel.queue_delete(f"{exchange}.unrouted")
        await channel.exchange_delete(exchange)
        await channel.exchange_delete(f"{exchange}.unrouted")
    finally:
        await connection.close()


@asynccontextmanager
async def throwaway_database(*, server_url: str, prefix: str) -> AsyncIterator[str]:
    """A new, empty database for one test run; yields its SQLAlchemy asyncpg URL, drops it after."""
    name = f"{prefix}_{run_id()}"
    await create_databases(server_url=server_url, names={name})
    parts = urlsplit(server_url)
    try:
        yield urlunsplit(("postgresql+asyncpg", parts.netloc, f"/{name}", "", ""))
    finally:
        await drop_databases(server_url=server_url, names={name})
