"""Which event each change records, decided in the domain with its own clock, and
handed to the repository to store with the change."""

from dataclasses import replace

import pytest

from interchange_common.actors import Actor
from user_service.domain.errors import PermissionDenied
from user_service.domain.events import change_of
from user_service.domain.model import NewUser, UserChanges, UserStatus
from user_service.domain.usecases import Users

from .conftest import FakeRepository, MakeUser, TickingClock

ADA = NewUser(name="Ada", email="ada@example.com", password="correct horse")


async def test_registering_records_user_created_with_the_users_own_time_and_the_correlation_id(
    users: Users, repository: FakeRepository
) -> None:
    user = await users.register(new_user=ADA)
    [created] = repository.events
    assert (created.type, created.user_id, created.user) == ("user.created", user.id, user)
    assert created.occurred_at == user.created_at
    assert created.correlation_id == "c1"


async def test_an_update_records_user_updated_naming_the_fields_that_changed_at_the_clocks_time(
    users: Users, repository: FakeRepository, clock: TickingClock
) -> None:
    user = await users.register(new_user=ADA)
    changes = UserChanges(name="Ada L.", status=UserStatus.SUSPENDED)
    updated = await users.update(actor=Actor.trusted_service(), user_id=user.id, changes=changes)
    updated_event = repository.events[-1]
    assert (updated_event.type, updated_event.user_id, updated_event.user) == ("user.updated", user.id, updated)
    assert updated_event.changed == ("name", "status")
    assert updated_event.occurred_at == updated.updated_at == clock.now
    assert updated_event.correlation_id == "c2"
    assert updated_event.as_message()["data"]["changed"] == ["name", "status"]


async def test_an_update_that_changes_nothing_records_nothing_and_keeps_the_user(
    users: Users, repository: FakeRepository
) -> None:
    user = await users.register(new_user=ADA)
    kept = await users.update(actor=Actor.trusted_service(), user_id=user.id, changes=UserChanges(name=" Ada "))
    assert kept == user
    assert [event.type for event in repository.events] == ["user.created"]


async def test_a_refused_update_records_nothing(users: Users, repository: FakeRepository) -> None:
    user = await users.register(new_user=ADA)
    myself = Actor(user_id=user.id, roles=frozenset({"user"}))
    with pytest.raises(PermissionDenied):
        await users.update(actor=myself, user_id=user.id, changes=UserChanges(roles=("admin",)))
    assert [event.type for event in repository.events] == ["user.created"]


async def test_deleting_records_user_deleted_without_the_user(
    users: Users, repository: FakeRepository, clock: TickingClock
) -> None:
    user = await users.register(new_user=ADA)
    await users.delete(actor=Actor.trusted_service(), user_id=user.id)
    deleted = repository.events[-1]
    assert (deleted.type, deleted.user_id, deleted.user) == ("user.deleted", user.id, None)
    assert deleted.occurred_at == clock.now
    assert deleted.as_message()["data"] == {"id": str(user.id)}


async def test_each_event_has_an_id_of_its_own(users: Users, repository: FakeRepository) -> None:
    user = await users.register(new_user=ADA)
    for name in ("B", "C"):
        await users.update(actor=Actor.trusted_service(), user_id=user.id, changes=UserChanges(name=name))
    await users.delete(actor=Actor.trusted_service(), user_id=user.id)
    assert len({event.id for event in repository.events}) == 4


def test_a_change_names_published_fields_only_never_the_password_hash(make_user: MakeUser, clock: TickingClock) -> None:
    before = make_user(password_hash="old")
    after = replace(before, password_hash="new", email="ada.l@example.com", updated_at=clock())
    change = change_of(before=before, after=after, correlation_id="c", at=after.updated_at)
    assert change is not None
    assert change.user == after
    assert change.event.changed == ("email",)
    assert change_of(before=before, after=before, correlation_id="c", at=clock()) is None
