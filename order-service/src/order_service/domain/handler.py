"""Handling a command: load, decide, save at the expected version, retry on conflict."""

import uuid
from collections.abc import Callable

from order_service.domain.errors import ConcurrencyConflict
from order_service.domain.order import Command, EventContext, Order, decide
from order_service.domain.ports import OrderStore

MAX_ATTEMPTS = 3


def _anything(_: Order | None) -> None:
    return None


async def handle(
    *,
    store: OrderStore,
    order_id: uuid.UUID,
    command: Command,
    context: EventContext,
    check: Callable[[Order | None], None] = _anything,
    new: bool = False,
) -> Order:
    """Another writer may record a change between our load and our save; then we
    decide again on the newer state, a bounded number of times. ``check`` sees each
    loaded state first and raises to refuse (who may act, which version). ``new``
    says the order cannot exist yet (a fresh id): the first attempt skips the load,
    and a conflict still loads and decides again."""
    for attempt in range(MAX_ATTEMPTS):
        order = None if new and attempt == 0 else await store.load(order_id=order_id)
        check(order)
        events = decide(command, order, context=context)
        try:
            return await store.save(order=order, events=events, order_id=order_id)
        except ConcurrencyConflict:
            continue
    raise ConcurrencyConflict(f"order {order_id} kept changing; try again")
