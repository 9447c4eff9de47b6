"""A user's tokens stop working when the user is suspended or deleted, or their
roles change (issue 7):
user-service's event reaches the gateway through RabbitMQ, and every gateway
instance refuses tokens issued before it (a mark in Redis), on every route and on
the live channels, and so does the TCP feed. Tokens from a log in after reactivation work.

And the live connections opened before it end within 2 s of the answer that revoked
them (issue 14), on both notification instances: WebSockets close 1008, event
streams end, TCP clients get an error line and EOF, UDP peers are told and forgotten.
No live right depends on a role (the roles only show in the welcome), so a role
change ends them as the others do: every token from before it is revoked."""

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any

import httpx
import jwt
import orjson
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from devstack.accounts import Account, login
from devstack.liveclients import Chat, Device, EventStream, StreamEnded, Terminal, ticket
from devstack.shop import NOTIFICATION_INSTANCES
from devstack.testing import wait_for
from interchange_common.actors import (
    ACTOR_EXPIRES_HEADER,
    ACTOR_ID_HEADER,
    ACTOR_ISSUED_AT_HEADER,
    ACTOR_ROLES_HEADER,
)
from interchange_common.servicejwt import ServiceTokenIssuer


def refused(gateway: httpx.Client, account: Account) -> bool:
    response = gateway.get("/api/orders", headers=account.headers)  # answers a deleted user too
    if response.status_code == 200:
        return False
    assert response.status_code == 401, response.text
    assert response.json()["detail"] == "token revoked"
    return True


def relogin(gateway: httpx.Client, account: Account, *, after: float) -> Account:
    """A new token for ``account``, issued in a later whole second than ``after``
    (tokens carry whole seconds; one from the same second counts as revoked)."""
    wait_for(lambda: time.time() >= int(after) + 1, timeout=2, what="the next second")
    return Account(
        account.id, account.email, account.password, login(gateway, email=account.email, password=account.password)
    )


def test_a_suspended_users_tokens_stop_working_everywhere_and_a_new_log_in_works_after(
    gateway, target, admin, new_account
):
    ann = new_account("Ann")
    assert not refused(gateway, ann)
    suspended = gateway.patch(f"/api/users/{ann.id}", json={"status": "SUSPENDED"}, headers=admin.headers)
    assert suspended.status_code == 200, suspended.text
    suspended_by = time.time()
    wait_for(lambda: refused(gateway, ann), timeout=30, what="the gateway to refuse the suspended user's token")
    assert gateway.get("/api/users/me", headers=ann.headers).status_code == 401
    assert gateway.post("/api/auth/ticket", headers=ann.headers).status_code == 401
    with Chat(target.gateway_url, account=ann) as chat:
        assert chat.close_code() == 1008
    target.need("ports")
    terminal = Terminal(target.ports.port("notification-service", 9000))
    try:
        assert terminal.receive()["type"] == "welcome"
        terminal.send({"type": "auth", "token": ann.token})
        assert terminal.receive() == {"type": "error", "detail": "not authenticated: token revoked"}
    finally:
        terminal.close()
    assert gateway.get("/api/users/me", headers=admin.headers).status_code == 200  # others are not affected

    active = gateway.patch(f"/api/users/{ann.id}", json={"status": "ACTIVE"}, headers=admin.headers)
    assert active.status_code == 200, active.text
    again = relogin(gateway, ann, after=suspended_by)
    wait_for(lambda: not refused(gateway, again), timeout=10, what="a token issued after reactivation to work")
    assert refused(gateway, ann)  # the old one stays dead


def test_a_deleted_users_token_stops_working(gateway, new_account):
    bob = new_account("Bob")
    assert gateway.delete(f"/api/users/{bob.id}", headers=bob.headers).status_code == 204
    wait_for(lambda: refused(gateway, bob), timeout=30, what="the gateway to refuse the deleted user's token")


def test_a_role_change_ends_the_users_tokens_so_a_demoted_admin_is_no_admin(gateway, admin, new_account):
    cy = new_account("Cy")
    promoted = gateway.patch(f"/api/users/{cy.id}", json={"roles": ["admin", "user"]}, headers=admin.headers)
    assert promoted.status_code == 200, promoted.text
    changed_at = time.time()
    wait_for(lambda: refused(gateway, cy), timeout=30, what="the token from before the promotion to end")
    cy_admin = relogin(gateway, cy, after=changed_at)
    wait_for(
        lambda: gateway.get("/api/users", headers=cy_admin.headers).status_code == 200,
        timeout=10,
        what="the new token to be an admin's",
    )

    demoted = gateway.patch(f"/api/users/{cy.id}", json={"roles": ["user"]}, headers=admin.headers)
    assert demoted.status_code == 200, demoted.text
    changed_at = time.time()
    wait_for(lambda: refused(gateway, cy_admin), timeout=30, what="the admin token to end with the demotion")
    assert gateway.get("/api/users", headers=cy_admin.headers).status_code == 401
    cy_user = relogin(gateway, cy, after=changed_at)
    wait_for(lambda: not refused(gateway, cy_user), timeout=10, what="a token from after the demotion to work")
    assert gateway.get("/api/users", headers=cy_user.headers).status_code == 403


def test_revoked_tokens_stay_revoked_when_redis_restarts_empty(gateway, target, admin, new_account):
    """Compose runs Redis without persistence: a restart empties it. The gateways write
    the marks back from user-service's table, where they are kept with the change."""
    if target.restart is None:
        pytest.skip(
            f"{target.kind} cannot restart its Redis here (the machine's own); tests/fault/"
            "test_revocation_durability.py restarts a private one, make compose-test runs this in containers"
        )
    dee = new_account("Dee")
    changed = gateway.patch(f"/api/users/{dee.id}", json={"roles": ["admin", "user"]}, headers=admin.headers)
    assert changed.status_code == 200, changed.text
    changed_at = time.time()
    wait_for(lambda: refused(gateway, dee), timeout=30, what="the token from before the role change to end")

    target.restart("redis")

    assert refused(gateway, dee)  # at once: the gateway's own copy of the marks
    # Once the marks are back in Redis, notification-service's feed refuses it too.
    target.need("ports")

    def feed_refuses() -> bool:
        terminal = Terminal(target.ports.port("notification-service", 9000))
        try:
            assert terminal.receive()["type"] == "welcome"
            terminal.send({"type": "auth", "token": dee.token})
            return terminal.receive() == {"type": "error", "detail": "not authenticated: token revoked"}
        finally:
            terminal.close()

    wait_for(feed_refuses, timeout=30, interval=0.5, what="the TCP feed to refuse the revoked token")
    again = relogin(gateway, dee, after=changed_at)
    wait_for(lambda: not refused(gateway, again), timeout=10, what="a token issued after the change to work")


# Live connections ----------------------------------------------------------------

DEADLINE_SECONDS = 2.0
REVOKED = {"type": "error", "detail": "token revoked"}

Waiter = Callable[[float], Any]  # waits until its connection ends (or the deadline): how it ended


def as_the_gateway_calls(target, account: Account) -> dict[str, str]:
    """The headers the gateway sends a notification instance for this account's token:
    with them a test opens a live connection on the instance of its choice."""
    claims = jwt.decode(account.token, options={"verify_signature": False})
    issuer = ServiceTokenIssuer(service="gateway", secret=target.service_jwt_secret, ttl_seconds=300)
    return {
        "Authorization": issuer.authorization_for(audience="notification-service"),
        ACTOR_ID_HEADER: account.id,
        ACTOR_ROLES_HEADER: ",".join(sorted(claims["roles"])),
        ACTOR_EXPIRES_HEADER: str(claims["exp"]),
        ACTOR_ISSUED_AT_HEADER: str(claims["iat"]),
    }


def left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.001)


def socket_close(connection: ClientConnection) -> Waiter:
    def wait(deadline: float) -> tuple[int | None, str]:
        try:
            while True:
                connection.recv(timeout=left(deadline))
        except ConnectionClosed:
            return connection.close_code, connection.close_reason or ""

    return wait


def stream_end(next_event: Callable[[], object]) -> Waiter:
    def wait(deadline: float) -> str:
        try:
            while True:
                next_event()
        except (StreamEnded, httpx.RemoteProtocolError, httpx.ReadError):
            return "ended"

    return wait


def last_line(terminal: Terminal) -> Waiter:
    def wait(deadline: float) -> object:
        last = None
        terminal.socket.settimeout(left(deadline))
        while line := terminal.lines.readline():
            last = orjson.loads(line)
        return last

    return wait


def datagram(device: Device) -> Waiter:
    def wait(deadline: float) -> object:
        device.socket.settimeout(left(deadline))
        return device.receive()

    return wait


class Held:
    """One account's live connections, through the gateway and on each notification
    instance (pinned by port), each with how it should end, and a UDP witness on each
    instance: another signed-in user's device."""

    def __init__(self, exits: ExitStack, *, target, gateway: httpx.Client, account: Account, witness: Account):
        self.witness = witness
        self.waiters: dict[str, Waiter] = {}
        self.expected: dict[str, object] = {}
        self.devices: list[tuple[Device, Device]] = []
        self.welcomes: list[dict[str, Any]] = []
        read_timeout = DEADLINE_SECONDS + 1  # the waits bound themselves by the deadline

        chat = exits.enter_context(Chat(target.gateway_url, ticket=ticket(gateway, account)))
        self.welcomes.append(chat.receive_type("welcome"))
        self._expect("gateway websocket (ticket)", socket_close(chat.connection), (1008, "token revoked"))
        stream = exits.enter_context(EventStream(gateway, headers=account.headers, read_timeout=read_timeout))
        assert stream.response.status_code == 200
        self._expect("gateway event stream", stream_end(stream.next), "ended")

        for instance in NOTIFICATION_INSTANCES:
            headers = as_the_gateway_calls(target, account)
            url = target.ports.url(instance, 8003)
            socket = exits.enter_context(
                connect(f"{url.replace('http', 'ws', 1)}/internal/ws", additional_headers=headers, open_timeout=10)
            )
            self.welcomes.append(orjson.loads(socket.recv(timeout=10)))
            self._expect(f"{instance} websocket", socket_close(socket), (1008, "token revoked"))

            client = exits.enter_context(httpx.Client(base_url=url, timeout=httpx.Timeout(10, read=read_timeout)))
            response = exits.enter_context(client.stream("GET", "/internal/events", headers=headers))
            assert response.status_code == 200, response.read()
            lines = response.iter_lines()
            assert next(lines) == "retry: 2000"

            def next_line(lines=lines):
                try:
                    return next(lines)
                except StopIteration:
                    raise StreamEnded("the stream ended") from None

            self._expect(f"{instance} event stream", stream_end(next_line), "ended")

            terminal = Terminal(target.ports.port(instance, 9000))
            exits.callback(terminal.close)
            assert terminal.receive()["type"] == "welcome"
            terminal.send({"type": "auth", "token": account.token})
            assert terminal.receive() == {"type": "authenticated", "userId": account.id}
            self._expect(f"{instance} tcp", last_line(terminal), REVOKED)

            pair = []
            for who in (account, witness):
                device = Device(target.ports.port(instance, 9001))
                exits.callback(device.close)
                device.send({"type": "ping", "token": who.token})
                assert [device.receive(), device.receive()] == [{"type": "ack"}, {"type": "pong"}]
                pair.append(device)
            self._expect(f"{instance} udp", datagram(pair[0]), REVOKED)
            self.devices.append((pair[0], pair[1]))

    def _expect(self, name: str, waiter: Waiter, outcome: object) -> None:
        self.waiters[name] = waiter
        self.expected[name] = outcome

    def ended_by(self, deadline: float) -> dict[str, object]:
        """How each connection ended, waiting for all at once until the deadline; one
        that had not ended by then is "still open"."""

        def outcome(waiter: Waiter) -> object:
            try:
                ended = waiter(deadline)
            except (TimeoutError, httpx.TimeoutException):
                return "still open"
            return ended if time.monotonic() <= deadline else "ended late"

        with ThreadPoolExecutor(max_workers=len(self.waiters)) as pool:
            futures = {name: pool.submit(outcome, waiter) for name, waiter in self.waiters.items()}
            return {name: future.result() for name, future in futures.items()}

    def assert_udp_peers_forgotten(self) -> None:
        """On each instance: the witness's broadcast no longer reaches the revoked
        peer, and the revoked peer's (no token: its sign-in is gone) reaches nobody."""
        for revoked, witness in self.devices:
            revoked.socket.settimeout(10)
            witness.send({"type": "broadcast", "data": "anyone?", "token": self.witness.token})
            assert witness.receive() == {"type": "ack"}  # relayed (to whom it went) before this ack
            revoked.send({"type": "broadcast", "data": "still me"})
            assert revoked.receive() == {"type": "ack"}  # no broadcast came before it
            assert revoked.receive() == {"type": "error", "detail": "broadcasting needs a valid token"}
            witness.send({"type": "ping"})
            assert witness.receive() == {"type": "ack"}  # nothing of the revoked peer's came before it


@pytest.fixture
def hold_live(target, gateway, new_account):
    """Opens an account's live connections everywhere (see Held); closes what is left after."""
    target.need("ports", "service_jwt_secret")
    with ExitStack() as exits:

        def hold(account: Account) -> Held:
            return Held(exits, target=target, gateway=gateway, account=account, witness=new_account("Witness"))

        yield hold


def assert_ended_within_the_deadline(held: Held, revoke: Callable[[], httpx.Response], status: int) -> None:
    answer = revoke()
    deadline = time.monotonic() + DEADLINE_SECONDS  # from the answer that revoked them
    assert answer.status_code == status, answer.text
    assert held.ended_by(deadline) == held.expected
    held.assert_udp_peers_forgotten()


def test_a_deleted_users_live_connections_end_on_every_instance(gateway, new_account, hold_live):
    dan = new_account("Dan")
    held = hold_live(dan)
    assert_ended_within_the_deadline(
        held, lambda: gateway.delete(f"/api/users/{dan.id}", headers=dan.headers), status=204
    )


def test_a_suspended_users_live_connections_end_on_every_instance(gateway, admin, new_account, hold_live):
    eve = new_account("Eve")
    held = hold_live(eve)
    assert_ended_within_the_deadline(
        held,
        lambda: gateway.patch(f"/api/users/{eve.id}", json={"status": "SUSPENDED"}, headers=admin.headers),
        status=200,
    )


def test_a_demoted_admins_live_connections_end_on_every_instance(gateway, admin, new_account, hold_live):
    fay = new_account("Fay")
    promoted = gateway.patch(f"/api/users/{fay.id}", json={"roles": ["admin", "user"]}, headers=admin.headers)
    assert promoted.status_code == 200, promoted.text
    fay_admin = relogin(gateway, fay, after=time.time())
    held = hold_live(fay_admin)
    assert all(welcome["user"]["roles"] == ["admin", "user"] for welcome in held.welcomes)  # an admin's token
    assert_ended_within_the_deadline(
        held,
        lambda: gateway.patch(f"/api/users/{fay.id}", json={"roles": ["user"]}, headers=admin.headers),
        status=200,
    )
