"""SqlUserRepository against a real PostgreSQL."""

import asyncio
import uuid
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from interchange_common.outbox import outbox
from user_service.adapters.errors import UserStoreError
from user_service.domain.errors import EmailTaken, UserNotFound
from user_service.domain.events import change_of, user_created, user_deleted
from user_service.domain.model import Page, User, UserStatus

pytestmark = pytest.mark.integration


def a_user(*, name="Ada", tag=None):
    tag = tag or uuid.uuid4().hex[:8]
    now = datetime.now(UTC)
    return User(uuid.uuid4(), name, f"{name.lower()}-{tag}@example.com", None, ("user",), UserStatus.ACTIVE, now, now)


def creation(user):
    return user_created(user=user, correlation_id="test", at=user.created_at)


def renamed(name):
    """A change to the name, as the use cases make it."""
    return lambda current: change_of(
        before=current, after=replace(current, name=name), correlation_id="test", at=datetime.now(UTC)
    )


async def test_a_stored_user_reads_back_the_same(repository):
    user = a_user()
    await repository.add(user=user, event=creation(user))
    assert await repository.get(user_id=user.id) == user
    assert await repository.get_by_email(email=user.email) == user


async def test_duplicate_emails_are_refused(repository):
    user = a_user()
    await repository.add(user=user, event=creation(user))
    with pytest.raises(EmailTaken):
        await repository.add(user=replace(user, id=uuid.uuid4()), event=creation(user))


async def test_unknown_ids_are_not_found(repository):
    with pytest.raises(UserNotFound):
        await repository.get(user_id=uuid.uuid4())
    unknown = uuid.uuid4()
    with pytest.raises(UserNotFound):
        await repository.delete(
            user_id=unknown, event=user_deleted(user_id=unknown, correlation_id="t", at=datetime.now(UTC))
        )
    with pytest.raises(UserNotFound):
        await repository.update(user_id=unknown, change=lambda user: None)


async def test_concurrent_updates_do_not_lose_changes(repository):
    user = a_user()
    await repository.add(user=user, event=creation(user))

    def add_role_marker(marker):
        return lambda current: renamed(current.name + marker)(current)

    await asyncio.gather(*(repository.update(user_id=user.id, change=add_role_marker(str(i))) for i in range(10)))
    final = await repository.get(user_id=user.id)
    assert sorted(final.name.removeprefix("Ada")) == sorted("0123456789")


async def test_a_failed_change_leaves_the_user_as_it_was(repository):
    user = a_user()
    await repository.add(user=user, event=creation(user))

    def broken(current):
        raise ValueError("rule broken")

    with pytest.raises(ValueError, match="rule broken"):
        await repository.update(user_id=user.id, change=broken)
    assert await repository.get(user_id=user.id) == user


async def test_the_filter_matches_name_or_email_case_insensitively_and_literally(repository):
    tag = uuid.uuid4().hex[:8]
    literal = a_user(name=f"Percent%{tag}_x", tag=tag)
    lookalike = a_user(name=f"PercentAB{tag}Zx", tag=tag + "z")
    by_email = a_user(name="Someone", tag=f"{tag}mail")
    for user in (literal, lookalike, by_email):
        await repository.add(user=user, event=creation(user))
    found, total = await repository.list(page=Page(page=1, limit=10), contains=f"percent%{tag}_".upper())
    assert [user.id for user in found] == [literal.id]
    assert total == 1
    found, _ = await repository.list(page=Page(page=1, limit=10), contains=f"{tag}MAIL")
    assert [user.id for user in found] == [by_email.id]


async def test_pages_split_a_list_and_report_the_total(repository):
    tag = uuid.uuid4().hex[:8]
    created = [a_user(name=f"Pager{tag}", tag=f"{tag}{i}") for i in range(5)]
    for user in created:
        await repository.add(user=user, event=creation(user))
    first, total = await repository.list(page=Page(page=1, limit=2), contains=f"pager{tag}")
    third, _ = await repository.list(page=Page(page=3, limit=2), contains=f"pager{tag}")
    assert total == 5
    assert len(first) == 2
    assert len(third) == 1


async def test_stream_yields_every_match_in_order_past_one_batch(repository):
    tag = uuid.uuid4().hex[:8]
    for i in range(450):
        user = a_user(name=f"Streamer{tag}", tag=f"{tag}{i:03}")
        await repository.add(user=user, event=creation(user))
    seen = [user async for user in repository.stream(contains=f"streamer{tag}")]
    assert len(seen) == 450
    assert seen == sorted(seen, key=lambda user: (user.created_at, user.id))


async def outbox_bodies(engine, *, user_id):
    query = select(outbox.c.message_id, outbox.c.body).where(outbox.c.body["data"]["id"].astext == str(user_id))
    async with engine.connect() as conn:
        return [(row.message_id, row.body) for row in await conn.execute(query.order_by(outbox.c.seq))]


async def test_each_change_stores_the_event_it_is_given_and_no_other(repository, engine):
    user = a_user()
    await repository.add(user=user, event=(first := creation(user)))
    change = renamed("Ada L.")(user)
    assert change is not None
    assert await repository.update(user_id=user.id, change=lambda current: change) == change.user
    assert await repository.update(user_id=user.id, change=lambda current: None) == change.user  # nothing to store
    last = user_deleted(user_id=user.id, correlation_id="test", at=datetime.now(UTC))
    await repository.delete(user_id=user.id, event=last)
    stored = await outbox_bodies(engine, user_id=user.id)
    assert stored == [(event.id, event.as_message()) for event in (first, change.event, last)]


async def test_a_change_whose_event_cannot_be_stored_is_not_kept(repository, engine):
    """One transaction: the outbox refuses a second message with the same id, so the
    user that came with it is not stored either."""
    user, other = a_user(), a_user()
    event = creation(user)
    await repository.add(user=user, event=event)
    with pytest.raises(UserStoreError):
        await repository.add(user=other, event=event)
    with pytest.raises(UserNotFound):
        await repository.get(user_id=other.id)
    with pytest.raises(UserStoreError):
        await repository.update(
            user_id=user.id, change=lambda current: replace(renamed("Ada L.")(current), event=event)
        )
    assert await repository.get(user_id=user.id) == user
    assert [message_id for message_id, _ in await outbox_bodies(engine, user_id=user.id)] == [event.id]


async def test_a_database_that_does_not_answer_is_unavailable_not_a_crash():
    from sqlalchemy.ext.asyncio import create_async_engine

    from devstack.testing import free_port
    from interchange_common.errors import DatabaseUnavailable
    from user_service.adapters.repository import SqlUserRepository

    engine = create_async_engine(f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/none")
    repository = SqlUserRepository(engine=engine, events_exchange="unused")
    try:
        with pytest.raises(DatabaseUnavailable) as error:
            await repository.get(user_id=uuid.uuid4())
        assert isinstance(error.value.__cause__, ConnectionRefusedError)
        user = a_user()
        with pytest.raises(DatabaseUnavailable):
            await repository.add(user=user, event=creation(user))
    finally:
        await engine.dispose()
