"""A rolling restart under load (issue 19): every backend instance, one at a time, is
sent SIGTERM, drains and exits 0, is started again and is back at work before the
next one goes, while clients place orders at 20 a second or more (a third without an
Idempotency-Key), read each one back, cancel every fourth with If-Match, follow their
event streams and hold WebSockets open.

No client request fails. A live connection may end with the instance behind it: an
event stream then resumes from its last id (no gap, nothing twice) and a WebSocket is
closed with 1012 and opened again; anything else counts as a failure. Afterwards no
order and no notification is missing or doubled, and the event store's sequencer has
moved to the other instance when the one leading it went.
"""

import contextlib
import itertools
import json
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed

from devstack.accounts import Account, register
from devstack.liveclients import Chat, Follower
from devstack.shop import EVENT_STORE_INSTANCES, ITEMS, NOTIFICATION_INSTANCES, ORDER_INSTANCES, USER_INSTANCES, Shop
from devstack.testing import wait_for

RATE = 26  # orders a second the clients aim at; the issue asks for 20 or more
SHOPPERS = 16
ACCOUNTS = 4
CHATS = 3
CANCEL_EVERY = 4
UNKEYED_EVERY = 3
SERVICE_RESTART = 1012
# What shows that a restarted instance is at work again (its own /metrics): a sample
# name, the labels it must have, and its HTTP port.
AT_WORK: Mapping[str, tuple[str, Mapping[str, str], int]] = {
    **{name: ("grpc_server_handled_total", {"grpc_method": "GetUser"}, 8001) for name in USER_INSTANCES},
    **{name: ("grpc_server_handled_total", {"grpc_method": "Append"}, 8004) for name in EVENT_STORE_INSTANCES},
    **{name: ("http_requests_total", {"method": "POST"}, 8002) for name in ORDER_INSTANCES},
    **{name: ("notification_messages_total", {}, 8003) for name in NOTIFICATION_INSTANCES},
}


# The instances that call each backend over gRPC for a client's request. Their channels
# reconnect to an instance back from a restart on their own schedule (within 2 s,
# interchange_common.rpc): the next instance may stop only once every caller has been
# answered by the one back, or a caller is left with no instance it can reach.
GRPC_CALLERS: Mapping[str, tuple[str, ...]] = dict.fromkeys((*USER_INSTANCES, *EVENT_STORE_INSTANCES), ORDER_INSTANCES)


def log_events(shop: Shop, name: str, *, after: int = 0) -> list[dict[str, object]]:
    """The JSON lines of an instance's log (all its runs: the runner appends), from line ``after``."""
    log_dir = shop.stack.native.log_dir
    assert log_dir is not None, "the fault tests' stacks keep logs"
    events = []
    for line in (log_dir / f"{name}.log").read_text(errors="replace").splitlines()[after:]:
        with contextlib.suppress(ValueError):  # a line still being written
            event = json.loads(line)
            if isinstance(event, dict):
                events.append(event)
    return events


def answered_every_caller(shop: Shop, name: str, *, after: int) -> bool:
    """Has the instance (since line ``after`` of its log) answered a call for a request
    of each of its gRPC callers? (The request id follows the request across.)"""
    answered = {
        event["request_id"]
        for event in log_events(shop, name, after=after)
        if event.get("message") == "rpc" and event.get("request_id") not in (None, "-")
    }
    return all(
        any(event.get("request_id") in answered for event in log_events(shop, caller))
        for caller in GRPC_CALLERS.get(name, ())
    )


def served(url: str, name: str, labels: Mapping[str, str]) -> float:
    """The sum of an instance's samples called ``name`` whose labels include ``labels``."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items())
    )


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


def shopper(*, gateway_url: str, account: Account, pacer: Pacer, ledger: Ledger, numbers: Callable[[], int]) -> None:
    with httpx.Client(base_url=gateway_url, timeout=30, headers=account.headers) as http:
        while pacer.wait_turn():
            number = numbers()
            keyed = number % UNKEYED_EVERY != 0
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
                if not ledger.outcome("read", read, expected=200) or number % CANCEL_EVERY != 0:
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
        except BaseException as e:  # the main thread reports it
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


def orders_listed(shop: Shop, account: Account) -> dict[str, str]:
    """Every order of the account's list: id → status."""
    found: dict[str, str] = {}
    for page in itertools.count(1):
        body = shop.gateway.get("/api/orders", params={"page": page, "limit": 100}, headers=account.headers).json()
        found |= {order["id"]: order["status"] for order in body["items"]}
        if not body["items"] or len(found) >= int(body["total"]):
            return found
    raise AssertionError("unreachable")


def sequencer_leader(shop: Shop) -> str | None:
    leading = [
        name
        for name in EVENT_STORE_INSTANCES
        if served(shop.stack.url(name, 8004), "eventstore_sequencer_leader", {}) == 1
    ]
    return leading[0] if len(leading) == 1 else None


def restart_gracefully(shop: Shop, name: str) -> int:
    """SIGTERM, wait for the drain and the exit, start again, wait until healthy, at
    work and reached by every gRPC caller; the exit code."""
    native = shop.stack.native
    native.kill(name, sig=signal.SIGTERM)

    def exited() -> tuple[int] | None:
        code = native.returncode(name)
        return None if code is None else (code,)

    (code,) = wait_for(exited, timeout=60, what=f"{name} to drain and exit")
    logged = len(log_events(shop, name))  # what the new process logs comes after
    native.restart(name)
    metric_name, labels, port = AT_WORK[name]
    url = shop.stack.url(name, port)
    wait_for(lambda: served(url, metric_name, labels) >= 3, timeout=60, what=f"{name} at work again")
    wait_for(
        lambda: answered_every_caller(shop, name, after=logged),
        timeout=30,
        interval=0.2,
        what=f"every gRPC caller of {name} to reach it again",
    )
    return code


def check_orders_and_notifications(shop: Shop, *, ledger: Ledger, account: Account) -> None:
    """The read model lists every order of the account once, none extra (an unkeyed
    POST carried out twice would show as one more), each in the state its client left
    it; one order.placed notification per order and one order.cancelled per cancel."""
    mine = {order for order, owner in ledger.placed.items() if owner == account.id}
    cancelled = mine & ledger.cancelled
    states = {order: "CANCELLED" if order in cancelled else "PLACED" for order in mine}

    def listed() -> dict[str, str] | None:
        found = orders_listed(shop, account)
        return found if found == states else None

    wait_for(listed, timeout=60, what="the read model to show every order in its state")
    expected = Counter(mine) + Counter(cancelled)

    def notified() -> bool:
        kinds = ("order.placed", "order.cancelled")
        return Counter(n["data"]["order_id"] for n in shop.notifications(account) if n["type"] in kinds) == expected

    wait_for(notified, timeout=60, what="every notification, once")


def test_a_rolling_restart_of_every_backend_instance_fails_no_request_and_loses_nothing(shop: Shop):
    gateway_url = shop.stack.url("gateway", 8080)
    accounts = [register(shop.gateway, name=f"Rolling {n}") for n in range(ACCOUNTS)]
    ledger, stop = Ledger(), threading.Event()
    pacer = Pacer(rate=RATE, stop=stop)
    counter = itertools.count()
    lock = threading.Lock()

    def numbers() -> int:
        with lock:
            return next(counter)

    listeners = [
        Listener(Follower(httpx.Client(base_url=gateway_url, timeout=30), account), account) for account in accounts
    ]
    sockets = [Socket(gateway_url, accounts[n % ACCOUNTS], stop, ledger) for n in range(CHATS)]
    threads = [
        threading.Thread(
            target=shopper,
            kwargs={
                "gateway_url": gateway_url,
                "account": accounts[n % ACCOUNTS],
                "pacer": pacer,
                "ledger": ledger,
                "numbers": numbers,
            },
            daemon=True,
        )
        for n in range(SHOPPERS)
    ]
    streams = [threading.Thread(target=listener.run, daemon=True) for listener in listeners]
    chats = [threading.Thread(target=socket.run, daemon=True) for socket in sockets]
    for thread in [*streams, *chats, *threads]:
        thread.start()

    leader_at_start = wait_for(lambda: sequencer_leader(shop), timeout=30, what="one sequencer leading")
    leaders = {leader_at_start}
    exit_codes: dict[str, int] = {}
    try:
        wait_for(lambda: ledger.orders() >= 2 * RATE, timeout=60, what="traffic before the first restart")
        started, orders_before = time.monotonic(), ledger.orders()
        for name in [*USER_INSTANCES, *EVENT_STORE_INSTANCES, *ORDER_INSTANCES, *NOTIFICATION_INSTANCES]:
            exit_codes[name] = restart_gracefully(shop, name)
            if name in EVENT_STORE_INSTANCES:
                leaders.add(wait_for(lambda: sequencer_leader(shop), timeout=30, what="one sequencer leading"))
        elapsed, orders_during = time.monotonic() - started, ledger.orders() - orders_before
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    for thread in chats:
        thread.join(timeout=30)

    assert not ledger.failures, (len(ledger.failures), ledger.failures[:10])
    assert exit_codes == dict.fromkeys(exit_codes, 0), exit_codes  # every instance drained and exited by itself
    assert leaders == set(EVENT_STORE_INSTANCES), leaders  # the sequencer moved with the restarts

    for account in accounts:
        check_orders_and_notifications(shop, ledger=ledger, account=account)
    # Each event stream resumed without a gap and without a repeat.
    for listener in listeners:
        mine = {order for order, owner in ledger.placed.items() if owner == listener.account.id}
        listener.expected = len(mine) + len(mine & ledger.cancelled)
    wait_for(
        lambda: all(one.error is not None or len(one.received) >= (one.expected or 0) for one in listeners),
        timeout=60,
        what="every event stream to catch up",
    )
    for listener in listeners:
        assert listener.error is None, listener.error
        mine = {order for order, owner in ledger.placed.items() if owner == listener.account.id}
        assert Counter(listener.received) == Counter(mine) + Counter(mine & ledger.cancelled)
        assert listener.follower.reconnects >= 1  # both notification instances went: every stream ended once
        listener.follower.close()
    assert all(socket.restarts >= 1 and socket.pongs > 0 for socket in sockets), [
        (socket.restarts, socket.pongs) for socket in sockets
    ]
    assert orders_during / elapsed >= 20, f"{orders_during} orders in {elapsed:.1f} s: the clients fell behind"
