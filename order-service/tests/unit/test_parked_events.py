"""ParkedEventAdmin against a fake of its port: admins only, ids that are no UUID are
not found, and pages are capped like every list."""

import uuid
from datetime import UTC, datetime

import pytest

from interchange_common.actors import Actor
from interchange_common.events import RecordedEvent
from interchange_common.projections import ParkedEvent
from order_service.domain.errors import ParkedEventNotFound, PermissionDenied
from order_service.domain.usecases import MAX_PAGE_SIZE, ParkedEventAdmin

ADMIN = Actor(user_id=uuid.uuid4(), roles=frozenset({"admin", "user"}))
USER = Actor(user_id=uuid.uuid4(), roles=frozenset({"user"}))


def parked_event() -> ParkedEvent:
    now = datetime.now(UTC)
    event = RecordedEvent(uuid.uuid4(), "order-x", "order.placed", {}, {}, 1, 7, now)
    return ParkedEvent(
        id=uuid.uuid4(), projection="orders", event=event, error="KeyError: 'x'", attempts=6, parked_at=now
    )


class FakeParked:
    def __init__(self) -> None:
        self.events = {each.id: each for each in (parked_event(), parked_event())}
        self.asked: list[tuple[str, object]] = []

    async def list(self, *, page, limit):
        self.asked.append(("list", (page, limit)))
        return list(self.events.values()), len(self.events)

    async def replay(self, *, parked_id):
        self.asked.append(("replay", parked_id))
        return self.events.pop(parked_id)

    async def skip(self, *, parked_id):
        self.asked.append(("skip", parked_id))
        return self.events.pop(parked_id)


async def test_only_admins_see_replay_or_skip_parked_events():
    fake = FakeParked()
    admin = ParkedEventAdmin(parked=fake)
    some = str(next(iter(fake.events)))
    with pytest.raises(PermissionDenied):
        await admin.list(actor=USER, page=1, limit=10)
    with pytest.raises(PermissionDenied):
        await admin.replay(actor=USER, parked_id=some)
    with pytest.raises(PermissionDenied):
        await admin.skip(actor=USER, parked_id=some)
    assert fake.asked == []  # refused before the store was asked


async def test_admins_list_a_capped_page_and_replay_or_skip_by_id():
    fake = FakeParked()
    admin = ParkedEventAdmin(parked=fake)
    found, total, served = await admin.list(actor=ADMIN, page=2, limit=1000)
    assert (len(found), total, served) == (2, 2, MAX_PAGE_SIZE)
    first, second = list(fake.events)
    assert (await admin.replay(actor=ADMIN, parked_id=str(first))).id == first
    assert (await admin.skip(actor=ADMIN, parked_id=str(second))).id == second
    assert fake.asked == [("list", (2, MAX_PAGE_SIZE)), ("replay", first), ("skip", second)]


@pytest.mark.parametrize("raw", ["not-an-id", "", "1234"])
async def test_an_id_that_is_no_uuid_is_not_found(raw):
    admin = ParkedEventAdmin(parked=FakeParked())
    with pytest.raises(ParkedEventNotFound):
        await admin.replay(actor=ADMIN, parked_id=raw)
    with pytest.raises(ParkedEventNotFound):
        await admin.skip(actor=ADMIN, parked_id=raw)
