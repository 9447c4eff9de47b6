"""Which changes leave a revocation mark (the gateway refuses the user's tokens issued
until then), stored with the change, and the list of live marks services read."""

import uuid
from datetime import timedelta

import pytest

from interchange_common.actors import Actor
from user_service.domain.events import REVOCATION_LIFETIME, TokenRevocation, revocation_of
from user_service.domain.model import NewUser, UserChanges, UserStatus
from user_service.domain.usecases import Users

from .conftest import FakeRepository, TickingClock

SERVICE = Actor.trusted_service()


async def registered(users: Users) -> uuid.UUID:
    user = await users.register(
        new_user=NewUser(name="Ada", email=f"ada-{uuid.uuid4().hex[:8]}@example.com", password="correct horse")
    )
    return user.id


@pytest.mark.parametrize(
    "changes",
    [
        UserChanges(status=UserStatus.SUSPENDED),
        UserChanges(status=UserStatus.INACTIVE),
        UserChanges(roles=("admin", "user")),
    ],
    ids=["suspended", "inactive", "roles"],
)
async def test_a_change_that_ends_the_users_tokens_leaves_a_mark_at_its_time(
    users: Users, repository: FakeRepository, clock: TickingClock, changes: UserChanges
) -> None:
    user_id = await registered(users)
    await users.update(actor=SERVICE, user_id=user_id, changes=changes)
    assert repository.marks == {user_id: clock.now}
    assert revocation_of(repository.events[-1]) == TokenRevocation(user_id, clock.now)


async def test_a_deletion_leaves_a_mark(users: Users, repository: FakeRepository, clock: TickingClock) -> None:
    user_id = await registered(users)
    await users.delete(actor=SERVICE, user_id=user_id)
    assert repository.marks == {user_id: clock.now}


async def test_registering_renaming_and_reactivating_leave_none(users: Users, repository: FakeRepository) -> None:
    user_id = await registered(users)
    await users.update(actor=SERVICE, user_id=user_id, changes=UserChanges(name="Ada L.", email="al@example.com"))
    await users.update(actor=SERVICE, user_id=user_id, changes=UserChanges(roles=("user",)))  # as it was: no change
    assert [revocation_of(event) for event in repository.events] == [None, None]
    await users.update(actor=SERVICE, user_id=user_id, changes=UserChanges(status=UserStatus.SUSPENDED))
    suspended = repository.marks[user_id]
    await users.update(actor=SERVICE, user_id=user_id, changes=UserChanges(status=UserStatus.ACTIVE))
    assert repository.marks == {user_id: suspended}


async def test_renaming_a_suspended_user_marks_again_as_the_gateway_does(
    users: Users, repository: FakeRepository, clock: TickingClock
) -> None:
    """The gateway revokes on every user.updated of a user who is not active; the mark
    kept here must be the one it makes (it is harmless: no such token can be new)."""
    user_id = await registered(users)
    await users.update(actor=SERVICE, user_id=user_id, changes=UserChanges(status=UserStatus.SUSPENDED))
    await users.update(actor=SERVICE, user_id=user_id, changes=UserChanges(name="Ada L."))
    assert repository.marks == {user_id: clock.now}


async def test_the_list_holds_the_live_marks_or_those_since_a_time(
    users: Users, repository: FakeRepository, clock: TickingClock
) -> None:
    old, recent = uuid.uuid4(), uuid.uuid4()
    repository.marks[old] = clock.now - REVOCATION_LIFETIME - timedelta(seconds=1)  # refuses nothing any more
    repository.marks[recent] = clock.now - timedelta(hours=1)
    suspended = await registered(users)
    await users.update(actor=SERVICE, user_id=suspended, changes=UserChanges(status=UserStatus.SUSPENDED))
    stamped = clock.now

    listed = await users.revocations(since=None)
    assert listed.as_of == clock.now
    assert sorted(listed.marks, key=lambda mark: mark.revoked_at) == [
        TokenRevocation(recent, repository.marks[recent]),
        TokenRevocation(suspended, stamped),
    ]
    assert (await users.revocations(since=stamped)).marks == [TokenRevocation(suspended, stamped)]
    assert (await users.revocations(since=stamped + timedelta(seconds=1))).marks == []
    # A time before the live ones is the live ones: never a mark that refuses nothing.
    far_back = await users.revocations(since=stamped - 2 * REVOCATION_LIFETIME)
    assert old not in {mark.user_id for mark in far_back.marks}
