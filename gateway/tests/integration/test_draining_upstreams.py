"""Rolling restarts seen from the gateway's upstream client, against real sockets: an
instance that says it is draining (``Connection: close``) is put last, and a request
whose connection dropped before any answer is sent again only where that is safe."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from gateway.adapters.upstream import UpstreamClient
from gateway.domain.errors import UpstreamUnavailable
from gateway.domain.model import Upstream

pytestmark = pytest.mark.integration


@dataclass
class RawInstance:
    """An HTTP/1.1 server on a real socket: ``drop`` reads each request and closes the
    connection without a word (what a client sees when it sends on a connection the
    server is closing); otherwise it answers 201, with ``Connection: close`` when
    ``closing`` (a draining instance)."""

    drop: bool = False
    closing: bool = False
    requests: list[str] = field(default_factory=list)
    connections: int = 0
    url: str = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                length = next(
                    (int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:")), 0
                )
                await reader.readexactly(length)
                self.requests.append(lines[0])
                if self.drop:
                    return
                connection = "close" if self.closing else "keep-alive"
                writer.write(
                    b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 2\r\n"
                    + f"connection: {connection}\r\n\r\n{{}}".encode()
                )
                await writer.drain()
                if self.closing:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def serving(instance: RawInstance) -> AsyncIterator[RawInstance]:
    server = await asyncio.start_server(instance.handle, "127.0.0.1", 0)
    instance.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    async with server:
        yield instance
        server.close()


@contextlib.asynccontextmanager
async def client_over(*instances: RawInstance, balancer_over, idempotency_keys: bool) -> AsyncIterator[UpstreamClient]:
    upstream = Upstream("things", audience="thing-service", idempotency_keys=idempotency_keys)
    client = UpstreamClient(
        upstreams={"things": upstream}, balancers={"things": balancer_over(*(i.url for i in instances))}
    )
    await client.start()
    try:
        yield client
    finally:
        await client.close()


async def post(client: UpstreamClient, *, key: str | None) -> int:
    headers = {"content-type": "application/json"} | ({"idempotency-key": key} if key else {})
    answer = await client.forward(
        upstream="things", method="POST", path="/things", query="", headers=headers, body=b"{}"
    )
    return answer.status


async def test_a_post_with_an_idempotency_key_dropped_before_any_answer_goes_to_the_next_instance(balancer_over):
    async with (
        serving(RawInstance(drop=True)) as dropping,
        serving(RawInstance()) as answering,
        client_over(dropping, answering, balancer_over=balancer_over, idempotency_keys=True) as client,
    ):
        assert await post(client, key="order-1") == 201
    assert dropping.requests == ["POST /things HTTP/1.1"]
    assert answering.requests == ["POST /things HTTP/1.1"]


async def test_a_post_without_a_key_is_never_sent_twice(balancer_over):
    async with (
        serving(RawInstance(drop=True)) as dropping,
        serving(RawInstance()) as answering,
        client_over(dropping, answering, balancer_over=balancer_over, idempotency_keys=True) as client,
    ):
        with pytest.raises(UpstreamUnavailable):
            await post(client, key=None)
    assert len(dropping.requests) == 1
    assert answering.requests == []


async def test_a_key_is_no_licence_to_repeat_where_the_upstream_does_not_honour_keys(balancer_over):
    async with (
        serving(RawInstance(drop=True)) as dropping,
        serving(RawInstance()) as answering,
        client_over(dropping, answering, balancer_over=balancer_over, idempotency_keys=False) as client,
    ):
        with pytest.raises(UpstreamUnavailable):
            await post(client, key="order-2")
    assert answering.requests == []


async def test_an_instance_that_answers_connection_close_gets_no_more_requests_while_another_serves(balancer_over):
    async with (
        serving(RawInstance(closing=True)) as draining,
        serving(RawInstance()) as other,
        client_over(draining, other, balancer_over=balancer_over, idempotency_keys=False) as client,
    ):
        statuses = [await post(client, key=None) for _ in range(5)]
    assert statuses == [201] * 5
    # The first request meets the draining instance and hears it; the rest go elsewhere,
    # although the balancer lists the draining instance first.
    assert len(draining.requests) == 1
    assert len(other.requests) == 4
