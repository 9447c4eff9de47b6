"""What order-service does, written against the ports: each entry point calls these.

Writes go to the event store through the decider (``handler.handle``); reads come
from the read model. Each command writes its result into the read model before it
answers, so a client reads its own writes on any instance, in one order and in the
lists; the projection keeps the model in step with every other writer. Who may do
what:

    place              a signed-in user whom user-service says is active, for
                       themselves; an Idempotency-Key makes a repeated request
                       return the first one's order
    get, events        the owner or an admin; anyone else is told "not found"
    list_own           the caller's own orders
    cancel             the owner or an admin; with If-Match only at that version
    confirm, ship      admins (the back office)
    parked events      admins: the events the read model's projection could not
                       apply, listed, replayed or skipped (ParkedEventAdmin)
"""

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from interchange_common.actors import Actor
from interchange_common.events import RecordedEvent
from interchange_common.projections import ParkedEvent
from order_service.domain.errors import (
    InvalidOrder,
    InvalidTransition,
    OrderNotFound,
    ParkedEventNotFound,
    PermissionDenied,
    UserMayNotOrder,
    VersionMismatch,
    VersionNotReached,
)
from order_service.domain.handler import handle
from order_service.domain.order import (
    CancelOrder,
    Command,
    ConfirmOrder,
    EventContext,
    Item,
    Order,
    PlaceOrder,
    ShipOrder,
    check_items,
    item_data,
)
from order_service.domain.ports import (
    IdempotencyKeys,
    OrderReadModel,
    OrderStore,
    ParkedEvents,
    UserDirectory,
    UserStatus,
)

MAX_PAGE_SIZE = 100
MAX_IDEMPOTENCY_KEY_LENGTH = 255


@dataclass(frozen=True, slots=True)
class Placed:
    order: Order
    created: bool  # False: an earlier request with the same Idempotency-Key placed it


def check_idempotency_key(key: str) -> str:
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY_LENGTH or not key.isascii() or not key.isprintable():
        raise InvalidOrder(f"an Idempotency-Key is 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} printable ASCII characters")
    return key


def check_may_order(*, status: UserStatus | None) -> None:
    """Only a user user-service knows, and says is active, may order (``status``
    None: no such user)."""
    if status is None:
        raise UserMayNotOrder("unknown user")
    if status is not UserStatus.ACTIVE:
        raise UserMayNotOrder("only active users may order")


def fingerprint(items: tuple[Item, ...]) -> str:
    """The same request body, however it was spelled (1E+1 or 10.00), has one fingerprint."""
    return hashlib.sha256(orjson.dumps([item_data(item) for item in items])).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


class Orders:
    def __init__(
        self,
        *,
        store: OrderStore,
        users: UserDirectory,
        read_model: OrderReadModel,
        keys: IdempotencyKeys,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._store = store
        self._users = users
        self._read_model = read_model
        self._keys = keys
        self._clock = clock

    def _context(self, request_id: str) -> EventContext:
        return EventContext(occurred_at=self._clock(), correlation_id=request_id, causation_id=request_id)

    async def place(
        self, *, actor: Actor, items: tuple[Item, ...], idempotency_key: str | None, request_id: str
    ) -> Placed:
        if actor.user_id is None:
            raise PermissionDenied("only a signed-in user can place an order")
        user_id = actor.user_id
        items = check_items(items)  # a refused body claims no key
        order_id = uuid.uuid4()
        if idempotency_key is not None:
            claimed = await self._keys.claim(
                user_id=user_id,
                key=check_idempotency_key(idempotency_key),
                fingerprint=fingerprint(items),
                order_id=order_id,
            )
            # The key took the id just made up: no order can have it yet. Another id is
            # an earlier request's, which may have placed its order already.
            if claimed != order_id:
                order_id = claimed
                earlier = await self._store.load(order_id=order_id)
                if earlier is not None:
                    return await self._answered(Placed(order=earlier, created=False))
        check_may_order(status=await self._users.status(user_id=user_id))
        command = PlaceOrder(order_id=order_id, user_id=user_id, items=items)
        try:
            # A fresh id, or an earlier request's id that the load above found unused: no load first.
            order = await handle(
                store=self._store, order_id=order_id, command=command, context=self._context(request_id), new=True
            )
        except InvalidTransition:
            # A concurrent request with the same key placed it between our load and save.
            earlier = await self._store.load(order_id=order_id)
            if idempotency_key is None or earlier is None:
                raise
            return await self._answered(Placed(order=earlier, created=False))
        return await self._answered(Placed(order=order, created=True))

    async def _answered(self, placed: Placed) -> Placed:
        await self._read_model.record(order=placed.order)
        return placed

    async def get(self, *, actor: Actor, order_id: uuid.UUID, min_version: int = 0) -> Order:
        """From the read model, which holds every answered command's result. The
        event store decides when the model has not seen the order or is older than
        ``min_version``; a version the order does not have is VersionNotReached,
        never an older order."""
        order = await self._read_model.get(order_id=order_id)
        if order is None or order.version < min_version:
            order = await self._store.load(order_id=order_id)
        if order is None or not actor.may_see(owner=order.user_id):
            raise OrderNotFound("order not found")
        if order.version < min_version:
            raise VersionNotReached(f"the order is at version {order.version}, not yet at {min_version}")
        return order

    async def list_own(self, *, actor: Actor, page: int, limit: int) -> tuple[list[Order], int, int]:
        """One page of the caller's own orders, the total, and the page size served."""
        if actor.user_id is None:
            raise PermissionDenied("only a signed-in user has orders")
        limit = min(limit, MAX_PAGE_SIZE)
        found, total = await self._read_model.list_for_user(user_id=actor.user_id, page=page, limit=limit)
        return found, total, limit

    async def cancel(
        self, *, actor: Actor, order_id: uuid.UUID, if_match: int | None, reason: str, request_id: str
    ) -> Order:
        return await self._change(
            actor=actor,
            order_id=order_id,
            command=CancelOrder(reason=reason),
            if_match=if_match,
            admin_only=False,
            request_id=request_id,
        )

    async def confirm(self, *, actor: Actor, order_id: uuid.UUID, if_match: int | None, request_id: str) -> Order:
        return await self._change(
            actor=actor,
            order_id=order_id,
            command=ConfirmOrder(),
            if_match=if_match,
            admin_only=True,
            request_id=request_id,
        )

    async def ship(self, *, actor: Actor, order_id: uuid.UUID, if_match: int | None, request_id: str) -> Order:
        return await self._change(
            actor=actor,
            order_id=order_id,
            command=ShipOrder(),
            if_match=if_match,
            admin_only=True,
            request_id=request_id,
        )

    async def history(self, *, actor: Actor, order_id: uuid.UUID) -> list[RecordedEvent]:
        events = await self._store.history(order_id=order_id)
        if not events or not actor.may_see(owner=uuid.UUID(str(events[0].data.get("user_id")))):
            raise OrderNotFound("order not found")
        return events

    async def _change(
        self,
        *,
        actor: Actor,
        order_id: uuid.UUID,
        command: Command,
        if_match: int | None,
        admin_only: bool,
        request_id: str,
    ) -> Order:
        def allowed(order: Order | None) -> None:
            if order is None or not actor.may_see(owner=order.user_id):
                raise OrderNotFound("order not found")
            if admin_only and not actor.is_admin:
                raise PermissionDenied("only an admin can do this")
            if if_match is not None and order.version != if_match:
                raise VersionMismatch(f"the order is at version {order.version}, not {if_match}")

        changed = await handle(
            store=self._store, order_id=order_id, command=command, context=self._context(request_id), check=allowed
        )
        await self._read_model.record(order=changed)
        return changed


def _parked_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError as e:
        raise ParkedEventNotFound("parked event not found") from e


class ParkedEventAdmin:
    """The projection's parked events, for admins only: an event the read model could
    not apply, to look at, apply again once its cause is gone, or skip."""

    def __init__(self, *, parked: ParkedEvents) -> None:
        self._parked = parked

    async def list(self, *, actor: Actor, page: int, limit: int) -> tuple[list[ParkedEvent], int, int]:
        """One page, oldest first, the total, and the page size served."""
        _ensure_admin(actor)
        limit = min(limit, MAX_PAGE_SIZE)
        found, total = await self._parked.list(page=page, limit=limit)
        return found, total, limit

    async def replay(self, *, actor: Actor, parked_id: str) -> ParkedEvent:
        _ensure_admin(actor)
        return await self._parked.replay(parked_id=_parked_id(parked_id))

    async def skip(self, *, actor: Actor, parked_id: str) -> ParkedEvent:
        _ensure_admin(actor)
        return await self._parked.skip(parked_id=_parked_id(parked_id))


def _ensure_admin(actor: Actor) -> None:
    if not actor.is_admin:
        raise PermissionDenied("only an admin can do this")
