"""The use cases against in-memory fakes of the ports: who may do what, idempotency,
If-Match, and reading your own writes whatever the projection's lag."""

import asyncio
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from interchange_common.actors import Actor
from interchange_common.events import RecordedEvent
from order_service.domain.errors import (
    ConcurrencyConflict,
    IdempotencyKeyReused,
    InvalidOrder,
    InvalidTransition,
    OrderNotFound,
    PermissionDenied,
    UserMayNotOrder,
    VersionMismatch,
    VersionNotReached,
)
from order_service.domain.order import Event, Item, Order, OrderStatus, check_items, event_data, evolve
from order_service.domain.ports import UserStatus
from order_service.domain.usecases import Orders, fingerprint

ITEMS = (Item("A-1", 2, Decimal("4.75")),)


class FakeStore:
    def __init__(self) -> None:
        self.streams: dict[uuid.UUID, list[Event]] = {}
        self.before_save: list[asyncio.Event] = []
        self.loads = 0

    async def load(self, *, order_id: uuid.UUID) -> Order | None:
        self.loads += 1
        state: Order | None = None
        for version, event in enumerate(self.streams.get(order_id, []), start=1):
            state = evolve(state, event, version=version)
        return state

    async def save(self, *, order: Order | None, events: list[Event], order_id: uuid.UUID) -> Order:
        if self.before_save:
            await self.before_save.pop(0).wait()
        stream = self.streams.setdefault(order_id, [])
        if len(stream) != (order.version if order else 0):
            raise ConcurrencyConflict("moved on")
        stream.extend(events)
        state = order
        for event in events:
            state = evolve(state, event, version=len(stream))
        assert state is not None, "save() needs at least one event"
        return state

    async def history(self, *, order_id: uuid.UUID) -> list[RecordedEvent]:
        return [
            RecordedEvent(event.id, f"order-{order_id}", event.type, event_data(event), {}, v, v, datetime.now(UTC))
            for v, event in enumerate(self.streams.get(order_id, []), start=1)
        ]


class FakeUsers:
    """user-service as the directory sees it: every user is active unless
    ``statuses`` says otherwise (None: no such user)."""

    def __init__(self) -> None:
        self.asked = 0
        self.statuses: dict[uuid.UUID, UserStatus | None] = {}

    async def status(self, *, user_id: uuid.UUID) -> UserStatus | None:
        self.asked += 1
        return self.statuses.get(user_id, UserStatus.ACTIVE)


class FakeReadModel:
    """Rows as the read model keeps them: commands record their results; the
    projection is never run, so only what is recorded (or ``project``ed by a test)
    is there. ``dropping`` loses every record, as when its database failed."""

    def __init__(self) -> None:
        self.rows: dict[uuid.UUID, Order] = {}
        self.dropping = False

    def project(self, order: Order) -> None:
        self.rows[order.id] = order

    async def get(self, *, order_id: uuid.UUID) -> Order | None:
        return self.rows.get(order_id)

    async def record(self, *, order: Order) -> None:
        known = self.rows.get(order.id)
        if not self.dropping and (known is None or known.version < order.version):
            self.rows[order.id] = order

    async def list_for_user(self, *, user_id: uuid.UUID, page: int, limit: int) -> tuple[list[Order], int]:
        mine = sorted((o for o in self.rows.values() if o.user_id == user_id), key=lambda o: o.created_at, reverse=True)
        return mine[(page - 1) * limit : page * limit], len(mine)


class FakeKeys:
    def __init__(self) -> None:
        self.keys: dict[tuple[uuid.UUID, str], tuple[str, uuid.UUID]] = {}

    async def claim(self, *, user_id: uuid.UUID, key: str, fingerprint: str, order_id: uuid.UUID) -> uuid.UUID:
        known = self.keys.setdefault((user_id, key), (fingerprint, order_id))
        if known[0] != fingerprint:
            raise IdempotencyKeyReused("other body")
        return known[1]


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def users() -> FakeUsers:
    return FakeUsers()


@pytest.fixture
def read_model() -> FakeReadModel:
    return FakeReadModel()


@pytest.fixture
def orders(store: FakeStore, users: FakeUsers, read_model: FakeReadModel) -> Orders:
    return Orders(store=store, users=users, read_model=read_model, keys=FakeKeys())


def user() -> Actor:
    return Actor(user_id=uuid.uuid4(), roles=frozenset({"user"}))


ADMIN = Actor(user_id=uuid.uuid4(), roles=frozenset({"admin", "user"}))


async def place(orders: Orders, actor: Actor, *, key: str | None = None, items: tuple[Item, ...] = ITEMS) -> Order:
    placed = await orders.place(actor=actor, items=items, idempotency_key=key, request_id="req")
    return placed.order


async def test_an_order_is_placed_for_the_caller_and_read_back_and_listed_at_once(orders):
    me = user()
    order = await place(orders, me)
    assert (order.user_id, order.status, order.total, order.version) == (
        me.user_id,
        OrderStatus.PLACED,
        Decimal("9.50"),
        1,
    )
    assert await orders.get(actor=me, order_id=order.id) == order
    assert await orders.list_own(actor=me, page=1, limit=10) == ([order], 1, 10)


async def test_a_read_after_a_command_sees_the_command_however_far_the_projection_lags(orders, read_model):
    me = user()
    order = await place(orders, me)
    read_model.project(order)  # the projection got as far as the placing, and stopped
    cancelled = await orders.cancel(actor=me, order_id=order.id, if_match=1, reason="", request_id="r")
    for read in (
        await orders.get(actor=me, order_id=order.id),
        (await orders.list_own(actor=me, page=1, limit=1))[0][0],
    ):
        assert (read.status, read.version) == (OrderStatus.CANCELLED, cancelled.version)
    confirmed_elsewhere = await orders.get(actor=ADMIN, order_id=order.id)
    assert confirmed_elsewhere == cancelled


async def test_a_read_model_that_missed_a_write_is_passed_over_for_the_event_store_at_min_version(orders, read_model):
    me = user()
    order = await place(orders, me)
    read_model.dropping = True
    cancelled = await orders.cancel(actor=me, order_id=order.id, if_match=None, reason="", request_id="r")
    assert await orders.get(actor=me, order_id=order.id, min_version=cancelled.version) == cancelled


async def test_a_version_the_order_does_not_have_is_refused_not_answered_with_an_older_order(orders, store):
    me = user()
    order = await place(orders, me)
    with pytest.raises(VersionNotReached, match="at version 1, not yet at 5"):
        await orders.get(actor=me, order_id=order.id, min_version=5)
    with pytest.raises(OrderNotFound):  # a stranger learns nothing, not even the version
        await orders.get(actor=user(), order_id=order.id, min_version=5)
    assert await orders.get(actor=me, order_id=order.id, min_version=1) == order


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (UserStatus.INACTIVE, "only active users may order"),
        (UserStatus.SUSPENDED, "only active users may order"),
        (UserStatus.UNKNOWN, "only active users may order"),
        (None, "unknown user"),
    ],
    ids=["inactive", "suspended", "status-unknown", "no-such-user"],
)
async def test_only_a_user_that_user_service_says_is_active_may_order(orders, store, users, status, reason):
    me = user()
    users.statuses[me.user_id] = status
    with pytest.raises(UserMayNotOrder) as refused:
        await orders.place(actor=me, items=ITEMS, idempotency_key=None, request_id="r")
    assert str(refused.value) == reason
    assert store.streams == {}
    assert (await orders.list_own(actor=me, page=1, limit=10))[1] == 0


async def test_a_new_order_is_not_looked_up_before_it_is_placed(orders, store):
    await place(orders, user())
    assert store.loads == 0  # a fresh id cannot exist: placing it is one append


async def test_a_new_idempotency_key_places_without_a_lookup_and_a_repeat_looks_up_once(orders, store):
    me = user()
    first = await orders.place(actor=me, items=ITEMS, idempotency_key="k-new", request_id="a")
    assert store.loads == 0  # the key took the id just made up: nothing can have it yet
    again = await orders.place(actor=me, items=ITEMS, idempotency_key="k-new", request_id="b")
    assert (again.created, again.order.id, store.loads) == (False, first.order.id, 1)


async def test_the_same_key_and_body_give_the_same_order_and_check_the_user_once(orders, store, users):
    me = user()
    first = await orders.place(actor=me, items=ITEMS, idempotency_key="k-1", request_id="a")
    again = await orders.place(
        actor=me, items=(Item("A-1", 2, Decimal("4.750")),), idempotency_key="k-1", request_id="b"
    )
    assert (first.created, again.created, again.order.id) == (True, False, first.order.id)
    assert len(store.streams) == 1
    assert users.asked == 1


async def test_concurrent_requests_with_one_key_place_one_order(orders, store):
    me = user()
    gate = asyncio.Event()
    store.before_save.append(gate)
    slow = asyncio.create_task(orders.place(actor=me, items=ITEMS, idempotency_key="k", request_id="a"))
    await asyncio.sleep(0)  # the first request is now waiting inside save
    fast = await orders.place(actor=me, items=ITEMS, idempotency_key="k", request_id="b")
    gate.set()
    slow_result = await slow
    assert fast.order.id == slow_result.order.id
    assert sorted([fast.created, slow_result.created]) == [False, True]
    assert [len(events) for events in store.streams.values()] == [1]


async def test_the_same_key_with_another_body_is_refused_and_changes_nothing(orders, store):
    me = user()
    await place(orders, me, key="k")
    with pytest.raises(IdempotencyKeyReused):
        await place(orders, me, key="k", items=(Item("B-2", 1, Decimal("1.00")),))
    assert len(store.streams) == 1


async def test_keys_belong_to_one_user(orders, store):
    mine = await place(orders, user(), key="shared")
    theirs = await place(orders, user(), key="shared")
    assert mine.id != theirs.id


async def test_a_refused_body_claims_no_key(orders):
    me = user()
    with pytest.raises(InvalidOrder):
        await place(orders, me, key="k", items=(Item("A-1", 0, Decimal(1)),))
    assert (await place(orders, me, key="k")).status is OrderStatus.PLACED


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", "naïve"])
async def test_malformed_keys_are_refused(orders, key):
    with pytest.raises(InvalidOrder):
        await place(orders, user(), key=key)


async def test_another_users_order_is_not_found_anywhere(orders):
    owner, stranger = user(), user()
    order = await place(orders, owner)
    with pytest.raises(OrderNotFound):
        await orders.get(actor=stranger, order_id=order.id)
    with pytest.raises(OrderNotFound):
        await orders.history(actor=stranger, order_id=order.id)
    with pytest.raises(OrderNotFound):
        await orders.cancel(actor=stranger, order_id=order.id, if_match=None, reason="", request_id="r")
    assert (await orders.get(actor=owner, order_id=order.id)).status is OrderStatus.PLACED


async def test_an_admin_sees_and_moves_any_order(orders):
    order = await place(orders, user())
    assert (await orders.get(actor=ADMIN, order_id=order.id)).id == order.id
    confirmed = await orders.confirm(actor=ADMIN, order_id=order.id, if_match=1, request_id="r")
    shipped = await orders.ship(actor=ADMIN, order_id=order.id, if_match=None, request_id="r")
    assert (confirmed.status, shipped.status, shipped.version) == (OrderStatus.CONFIRMED, OrderStatus.SHIPPED, 3)


async def test_only_admins_confirm(orders):
    me = user()
    order = await place(orders, me)
    with pytest.raises(PermissionDenied):
        await orders.confirm(actor=me, order_id=order.id, if_match=None, request_id="r")


async def test_if_match_on_an_old_version_is_refused_and_changes_nothing(orders, store):
    me = user()
    order = await place(orders, me)
    await orders.confirm(actor=ADMIN, order_id=order.id, if_match=None, request_id="r")
    with pytest.raises(VersionMismatch):
        await orders.cancel(actor=me, order_id=order.id, if_match=1, reason="", request_id="r")
    assert (await store.load(order_id=order.id)).status is OrderStatus.CONFIRMED
    cancelled = await orders.cancel(actor=me, order_id=order.id, if_match=2, reason="changed my mind", request_id="r")
    assert (cancelled.status, cancelled.version) == (OrderStatus.CANCELLED, 3)


async def test_cancelling_twice_is_a_conflict(orders):
    me = user()
    order = await place(orders, me)
    await orders.cancel(actor=me, order_id=order.id, if_match=None, reason="", request_id="r")
    with pytest.raises(InvalidTransition):
        await orders.cancel(actor=me, order_id=order.id, if_match=None, reason="", request_id="r")


async def test_history_is_oldest_first(orders):
    me = user()
    order = await place(orders, me)
    await orders.cancel(actor=me, order_id=order.id, if_match=None, reason="", request_id="r")
    history = await orders.history(actor=me, order_id=order.id)
    assert [(event.type, event.version) for event in history] == [("order.placed", 1), ("order.cancelled", 2)]


async def test_anonymous_callers_cannot_order_or_list(orders):
    with pytest.raises(PermissionDenied):
        await place(orders, Actor.anonymous())
    with pytest.raises(PermissionDenied):
        await orders.list_own(actor=Actor.anonymous(), page=1, limit=10)


def test_the_fingerprint_of_checked_items_ignores_how_a_price_was_spelled():
    def of(quantity, price):
        return fingerprint(check_items((Item("A", quantity, Decimal(price)),)))

    assert of(1, "1E+1") == of(1, "10.00") == of(1, "10")
    assert of(1, "10") != of(2, "10")
