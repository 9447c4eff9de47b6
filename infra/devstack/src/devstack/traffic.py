"""Steady client traffic through a stack's gateway, and the checks of what it left
behind: what a test that disturbs a deployment (restarts, rolls, fails over) runs
meanwhile. It needs nothing but the gateway: no logs, metrics or processes.

    SteadyTraffic   shoppers that place orders at a steady rate (some without an
                    Idempotency-Key), read each one back and cancel some with If-Match;
                    event streams followed across their ends; WebSockets that ping
                    through restarts. ``check`` then asserts that no request failed and
                    that no order, notification or event went missing or came twice
    Pace            the orders a second placed between a ``mark`` and later
    orders_listed   every order of an account's list, with its status
"""

import itertools
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from types import TracebackType

import httpx
from websockets.exceptions import ConnectionClosed

from devstack.accounts import Account, notifications_of, register
from devstack.liveclients import Chat, Follower
from devstack.shop import ITEMS
from devstack.testing import wait_for

SERVICE_RESTART = 1012  # the close code of a WebSocket whose instance is going away
CAUGHT_UP_TIMEOUT = 60.0  # seconds for the read model, the notifications and the streams to catch up


@dataclass
class Ledger:
    """What the clients did and saw, from every thread."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    placed: dict[str, str] = field(default_factory=dict)  # order id → account id
    cancelled: set[str] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)
    requests: int = 0

    def outcome(self, what: str, response: httpx.Response, *, expected: int) -> bool:
        with self.lock:
            self.requests += 1
            if response.status_code != expected:
                self.failures.append(f"{what}: {response.status_code} {response.text[:200]}")
                return False
        return True

    def failed(self, what: str, error: BaseException) -> None:
        with self.lock:
            self.requests += 1
            self.failures.append(f"{what}: {type(error).__name__} {error}")

    def orders(self) -> int:
        with self.lock:
            return len(self.placed)

    def orders_of(self, account: Account) -> tuple[set[str], set[str]]:
        """The account's orders, and those of them cancelled."""
        with self.lock:
            mine = {order for order, owner in self.placed.items() if owner == account.id}
            return mine, mine & self.cancelled


@dataclass
class Pacer:
    """Hands out start times ``1 / rate`` apart to the threads that ask."""

    rate: float
    stop: threading.Event
    lock: threading.Lock = field(default_factory=threading.Lock)
    next_at: float = field(default_factory=time.monotonic)

    def wait_turn(self) -> bool:
        with self.lock:
            at = max(self.next_at, time.monotonic())
            self.next_at = at + 1 / self.rate
        return not self.stop.wait(max(0.0, at - time.monotonic()))


def shopper(
    *,
    gateway_url: str,
    account: Account,
    pacer: Pacer,
    ledger: Ledger,
    numbers: Callable[[], int],
    cancel_every: int,
    unkeyed_every: int,
) -> None:
    """Places an order at each turn (every ``unkeyed_every``-th without an
    Idempotency-Key), reads it back and cancels every ``cancel_every``-th with the
    ETag it read, until the pacer stops."""
    with httpx.Client(base_url=gateway_url, timeout=30, headers=account.headers) as http:
        while pacer.wait_turn():
            number = numbers()
            keyed = number % unkeyed_every != 0
            try:
                placed = http.post(
                    "/api/orders",
                    json={"items": ITEMS},
                    headers={"Idempotency-Key": str(uuid.uuid4())} if keyed else {},
                )
                if not ledger.outcome("place", placed, expected=201):
                    continue
                order_id = placed.json()["id"]
                with ledger.lock:
                    assert order_id not in ledger.placed, f"order {order_id} answered twice"
                    ledger.placed[order_id] = account.id
                read = http.get(f"/api/orders/{order_id}")
                if not ledger.outcome("read", read, expected=200) or number % cancel_every != 0:
                    continue
                cancel = http.post(f"/api/orders/{order_id}/cancel", headers={"If-Match": read.headers["etag"]})
                if ledger.outcome("cancel", cancel, expected=200):
                    with ledger.lock:
                        ledger.cancelled.add(order_id)
            except httpx.TransportError as e:
                ledger.failed("a request", e)


@dataclass
class Listener:
    """One account's event stream, reopened from its last id whenever it ends."""

    follower: Follower
    account: Account
    received: list[str] = field(default_factory=list)
    expected: int | None = None  # set once the shoppers have stopped
    error: BaseException | None = None

    def run(self) -> None:
        try:
            while self.expected is None or len(self.received) < self.expected:
                self.received += self.follower.orders(1)
        except BaseException as e:  # the checking thread reports it
            self.error = e


@dataclass
class Socket:
    """A WebSocket that pings its way through the restarts: closed with 1012, it opens
    a new one; any other end is a failure."""

    gateway_url: str
    account: Account
    stop: threading.Event
    ledger: Ledger
    restarts: int = 0
    pongs: int = 0

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                with Chat(self.gateway_url, account=self.account) as chat:
                    chat.receive_type("welcome")
                    while not self.stop.wait(0.5):
                        chat.send({"type": "ping"})
                        chat.receive_type("pong")
                        self.pongs += 1
            except ConnectionClosed as e:
                if e.rcvd is None or e.rcvd.code != SERVICE_RESTART:
                    self.ledger.failed("a WebSocket", e)
                    return
                self.restarts += 1
            except Exception as e:
                self.ledger.failed("a WebSocket", e)
                return


def orders_listed(gateway: httpx.Client, account: Account) -> dict[str, str]:
    """Every order of the account's list: id → status."""
    found: dict[str, str] = {}
    for page in itertools.count(1):
        body = gateway.get("/api/orders", params={"page": page, "limit": 100}, headers=account.headers).json()
        found |= {order["id"]: order["status"] for order in body["items"]}
        if not body["items"] or len(found) >= int(body["total"]):
            return found
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Mark:
    """A moment of the traffic: when, and how many orders had been placed by then."""

    at: float
    orders: int


@dataclass(frozen=True)
class Pace:
    """The orders placed in a window of time."""

    orders: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.orders / self.seconds

    def check(self, *, minimum: float) -> None:
        assert self.per_second >= minimum, f"{self.orders} orders in {self.seconds:.1f} s: the clients fell behind"


class SteadyTraffic:
    """Clients of a gateway at work, as a context manager: on entering, ``accounts``
    new users are registered (through ``gateway``), each followed by an event stream;
    ``shoppers`` threads place orders at ``rate`` a second between them, and ``chats``
    WebSockets ping. ``stop`` (also on leaving) stops the shoppers and the WebSockets;
    the ``check_*`` methods, after ``stop``, assert what the clients must have seen."""

    def __init__(
        self,
        *,
        gateway_url: str,
        gateway: httpx.Client,
        rate: float = 26,
        shoppers: int = 16,
        accounts: int = 4,
        chats: int = 3,
        cancel_every: int = 4,
        unkeyed_every: int = 3,
        name: str = "Steady",
    ) -> None:
        self._gateway_url = gateway_url
        self._gateway = gateway
        self._shopper_count = shoppers
        self._account_count = accounts
        self._chat_count = chats
        self._cancel_every = cancel_every
        self._unkeyed_every = unkeyed_every
        self._name = name
        self.ledger = Ledger()
        self._stop = threading.Event()
        self._pacer = Pacer(rate=rate, stop=self._stop)
        self._counter = itertools.count()
        self._counter_lock = threading.Lock()
        self._exits = ExitStack()
        self.accounts: list[Account] = []
        self.listeners: list[Listener] = []
        self.sockets: list[Socket] = []
        self._shoppers: list[threading.Thread] = []
        self._chats: list[threading.Thread] = []

    def __enter__(self) -> "SteadyTraffic":
        try:
            self.start()
        except BaseException:
            self._exits.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        try:
            self.stop()
        finally:
            self._exits.close()

    def _number(self) -> int:
        with self._counter_lock:
            return next(self._counter)

    def start(self) -> None:
        """Registers the accounts, opens their event streams and starts every thread."""
        self.accounts = [register(self._gateway, name=f"{self._name} {n}") for n in range(self._account_count)]
        for account in self.accounts:
            client = self._exits.enter_context(httpx.Client(base_url=self._gateway_url, timeout=30))
            follower = Follower(client, account)
            self._exits.callback(follower.close)
            self.listeners.append(Listener(follower, account))
        self.sockets = [
            Socket(self._gateway_url, self.accounts[n % self._account_count], self._stop, self.ledger)
            for n in range(self._chat_count)
        ]
        self._shoppers = [
            threading.Thread(
                target=shopper,
                kwargs={
                    "gateway_url": self._gateway_url,
                    "account": self.accounts[n % self._account_count],
                    "pacer": self._pacer,
                    "ledger": self.ledger,
                    "numbers": self._number,
                    "cancel_every": self._cancel_every,
                    "unkeyed_every": self._unkeyed_every,
                },
                daemon=True,
            )
            for n in range(self._shopper_count)
        ]
        streams = [threading.Thread(target=listener.run, daemon=True) for listener in self.listeners]
        self._chats = [threading.Thread(target=socket.run, daemon=True) for socket in self.sockets]
        for thread in [*streams, *self._chats, *self._shoppers]:
            thread.start()

    def orders(self) -> int:
        """How many orders have been placed so far."""
        return self.ledger.orders()

    def mark(self) -> Mark:
        return Mark(at=time.monotonic(), orders=self.orders())

    def pace_since(self, mark: Mark) -> Pace:
        return Pace(orders=self.orders() - mark.orders, seconds=time.monotonic() - mark.at)

    def stop(self) -> None:
        """Stops the shoppers (each after the order it is at) and then the WebSockets;
        the event streams go on until ``check_streams`` has seen them catch up."""
        if self._stop.is_set():
            return
        self._stop.set()
        for thread in self._shoppers:
            thread.join(timeout=60)
        for thread in self._chats:
            thread.join(timeout=30)

    def check_requests(self) -> None:
        """No client request failed, and no WebSocket ended but for a restart."""
        failures = self.ledger.failures
        assert not failures, (len(failures), failures[:10])

    def check_read_model(self) -> None:
        """For each account: the read model lists every order once, none extra (an
        unkeyed POST carried out twice would show as one more), each in the state its
        client left it; one order.placed notification per order and one
        order.cancelled per cancel."""
        for account in self.accounts:
            self._check_orders_and_notifications(account)

    def _check_orders_and_notifications(self, account: Account) -> None:
        mine, cancelled = self.ledger.orders_of(account)
        states = {order: "CANCELLED" if order in cancelled else "PLACED" for order in mine}

        def listed() -> dict[str, str] | None:
            found = orders_listed(self._gateway, account)
            return found if found == states else None

        wait_for(listed, timeout=CAUGHT_UP_TIMEOUT, what="the read model to show every order in its state")
        expected = Counter(mine) + Counter(cancelled)

        def notified() -> bool:
            kinds = ("order.placed", "order.cancelled")
            found = notifications_of(self._gateway, account)
            return Counter(n["data"]["order_id"] for n in found if n["type"] in kinds) == expected

        wait_for(notified, timeout=CAUGHT_UP_TIMEOUT, what="every notification, once")

    def check_streams(self, *, min_reconnects: int = 0) -> None:
        """Every event stream caught up with one event per order and one per cancel:
        none missing, none twice, across at least ``min_reconnects`` reopenings each."""
        for listener in self.listeners:
            mine, cancelled = self.ledger.orders_of(listener.account)
            listener.expected = len(mine) + len(cancelled)
        wait_for(
            lambda: all(one.error is not None or len(one.received) >= (one.expected or 0) for one in self.listeners),
            timeout=CAUGHT_UP_TIMEOUT,
            what="every event stream to catch up",
        )
        for listener in self.listeners:
            assert listener.error is None, listener.error
            mine, cancelled = self.ledger.orders_of(listener.account)
            expected, received = Counter(mine) + Counter(cancelled), Counter(listener.received)
            assert received == expected, ("missing", expected - received, "twice or more", received - expected)
            reconnects = listener.follower.reconnects
            assert reconnects >= min_reconnects, (
                f"an event stream reopened {reconnects} times, fewer than {min_reconnects}"
            )
            listener.follower.close()

    def check_sockets(self, *, min_restarts: int = 0) -> None:
        """Every WebSocket was answered pings, and was closed for a restart and opened
        again at least ``min_restarts`` times."""
        assert all(socket.restarts >= min_restarts and socket.pongs > 0 for socket in self.sockets), [
            (socket.restarts, socket.pongs) for socket in self.sockets
        ]

    def check(self, *, min_stream_reconnects: int = 0, min_socket_restarts: int = 0) -> None:
        """Every check, after ``stop``."""
        self.check_requests()
        self.check_read_model()
        self.check_streams(min_reconnects=min_stream_reconnects)
        self.check_sockets(min_restarts=min_socket_restarts)
