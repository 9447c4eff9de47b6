"""The revocation marks against a real PostgreSQL: stored in the transaction of the
change that revokes (or not at all), the later mark kept, old ones pruned, and listed
to services by GET /internal/revocations (what the gateway restores Redis from)."""

import asyncio
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import insert, select

from interchange_common.servicejwt import ServiceTokenIssuer, ServiceTokenVerifier
from user_service.adapters.errors import UserStoreError
from user_service.adapters.orm import revocation_marks
from user_service.domain.events import REVOCATION_LIFETIME, change_of, user_created, user_deleted
from user_service.domain.model import User, UserStatus
from user_service.entrypoints.http import create_http_app

pytestmark = pytest.mark.integration
SECRET = "integration-secret-" + "r" * 32


def a_user() -> User:
    now = datetime.now(UTC)
    tag = uuid.uuid4().hex[:8]
    return User(uuid.uuid4(), "Ada", f"ada-{tag}@example.com", None, ("user",), UserStatus.ACTIVE, now, now)


async def stored(repository) -> User:
    user = a_user()
    await repository.add(user=user, event=user_created(user=user, correlation_id="t", at=user.created_at))
    return user


def to(*, at: datetime, **fields):
    """A change to ``fields`` at ``at``, as the use cases make it."""
    return lambda current: change_of(before=current, after=replace(current, **fields), correlation_id="t", at=at)


async def mark_of(engine, user_id) -> datetime | None:
    query = select(revocation_marks.c.revoked_at).where(revocation_marks.c.user_id == user_id)
    async with engine.connect() as conn:
        return (await conn.execute(query)).scalar_one_or_none()


async def test_a_change_that_revokes_stores_its_mark_and_the_later_mark_stays(repository, engine):
    user = await stored(repository)
    renamed_at = datetime.now(UTC)
    await repository.update(user_id=user.id, change=to(at=renamed_at, name="Ada L."))
    assert await mark_of(engine, user.id) is None

    suspended_at = renamed_at + timedelta(seconds=1)
    await repository.update(user_id=user.id, change=to(at=suspended_at, status=UserStatus.SUSPENDED))
    assert await mark_of(engine, user.id) == suspended_at
    # A change stamped earlier (its clock behind another instance's) never moves it back.
    await repository.update(user_id=user.id, change=to(at=suspended_at - timedelta(minutes=5), roles=("admin",)))
    assert await mark_of(engine, user.id) == suspended_at

    deleted_at = suspended_at + timedelta(seconds=1)
    await repository.delete(user_id=user.id, event=user_deleted(user_id=user.id, correlation_id="t", at=deleted_at))
    assert await mark_of(engine, user.id) == deleted_at  # outlives the user


async def test_a_change_that_is_not_kept_leaves_no_mark(repository, engine):
    """One transaction: the outbox refuses a second message with the same id, so the
    suspension that came with it is not stored, and neither is its mark."""
    user = await stored(repository)
    first = to(at=datetime.now(UTC), name="Ada L.")(user)
    assert first is not None
    await repository.update(user_id=user.id, change=lambda current: first)
    suspension = to(at=datetime.now(UTC), status=UserStatus.SUSPENDED)

    def reusing_the_event_id(current):
        change = suspension(current)
        return replace(change, event=replace(change.event, id=first.event.id))

    with pytest.raises(UserStoreError):
        await repository.update(user_id=user.id, change=reusing_the_event_id)
    assert (await repository.get(user_id=user.id)).status is UserStatus.ACTIVE
    assert await mark_of(engine, user.id) is None


async def test_marks_that_refuse_nothing_any_more_are_pruned_by_the_next(repository, engine):
    now = datetime.now(UTC)
    stale, live = uuid.uuid4(), uuid.uuid4()
    async with engine.begin() as conn:
        await conn.execute(
            insert(revocation_marks),
            [
                {"user_id": stale, "revoked_at": now - REVOCATION_LIFETIME - timedelta(minutes=1)},
                {"user_id": live, "revoked_at": now - REVOCATION_LIFETIME + timedelta(minutes=5)},
            ],
        )
    user = await stored(repository)
    await repository.update(user_id=user.id, change=to(at=now, status=UserStatus.SUSPENDED))
    assert await mark_of(engine, stale) is None
    assert await mark_of(engine, live) is not None
    assert await mark_of(engine, user.id) == now


async def test_the_prune_never_waits_for_a_mark_another_change_holds(repository, engine):
    """Each revocation prunes the stale marks. A stale mark another transaction holds
    (re-marking that user, and about to prune this one's stale mark: each would wait
    for the other, a deadlock) is skipped, not waited for; a later prune takes it."""
    now = datetime.now(UTC)
    held, user = uuid.uuid4(), await stored(repository)
    stale = now - REVOCATION_LIFETIME - timedelta(hours=1)
    async with engine.begin() as conn:
        await conn.execute(insert(revocation_marks).values(user_id=held, revoked_at=stale))
    async with engine.connect() as other:
        transaction = await other.begin()
        await other.execute(select(revocation_marks).where(revocation_marks.c.user_id == held).with_for_update())
        async with asyncio.timeout(10):
            await repository.update(user_id=user.id, change=to(at=now, status=UserStatus.SUSPENDED))
        assert await mark_of(engine, user.id) == now
        await transaction.rollback()
    assert await mark_of(engine, held) == stale  # skipped while held
    again = await stored(repository)
    await repository.update(user_id=again.id, change=to(at=now, status=UserStatus.SUSPENDED))
    assert await mark_of(engine, held) is None


@pytest.fixture
async def client(users):
    """The HTTP app over ``users``, called as the gateway calls it (no actor)."""
    app = create_http_app(
        users=users,
        verifier=ServiceTokenVerifier(service="user-service", secret=SECRET),
        jwks=lambda: {"keys": []},
        health_checks=lambda: [],
        max_body_bytes=4096,
    )
    token = ServiceTokenIssuer(service="gateway", secret=SECRET, ttl_seconds=300).token_for(audience="user-service")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://user-service",
        headers={"authorization": f"Bearer {token}"},
    ) as client:
        yield client


def listed(response: httpx.Response) -> dict[uuid.UUID, datetime]:
    assert response.status_code == 200, response.text
    return {uuid.UUID(item["user_id"]): datetime.fromisoformat(item["revoked_at"]) for item in response.json()["items"]}


async def test_the_list_needs_a_service_token(client):
    async with httpx.AsyncClient(transport=client._transport, base_url="http://user-service") as bare:
        response = await bare.get("/internal/revocations")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


async def test_the_list_holds_every_live_mark_or_those_since_a_time(client, engine):
    """Thousands of marks (a wave of suspensions) in one answer, each as stored."""
    now = datetime.now(UTC)
    many = {uuid.uuid4(): now - timedelta(seconds=i) for i in range(3000)}
    stale = uuid.uuid4()
    async with engine.begin() as conn:
        await conn.execute(insert(revocation_marks), [{"user_id": u, "revoked_at": at} for u, at in many.items()])
        await conn.execute(
            insert(revocation_marks).values(user_id=stale, revoked_at=now - REVOCATION_LIFETIME - timedelta(hours=1))
        )

    response = await client.get("/internal/revocations")
    everything = listed(response)
    assert {user_id: everything.get(user_id) for user_id in many} == many
    assert stale not in everything
    as_of = datetime.fromisoformat(response.json()["as_of"])
    assert now <= as_of <= datetime.now(UTC)

    since = now - timedelta(seconds=9)
    recent = listed(await client.get("/internal/revocations", params={"since": since.isoformat()}))
    assert {user_id for user_id in recent if user_id in many} == {u for u, at in many.items() if at >= since}
    later = (now + timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    assert not set(listed(await client.get("/internal/revocations", params={"since": later}))) & set(many)


@pytest.mark.parametrize("since", ["2026-01-01T00:00:00", "yesterday", ""])
async def test_a_since_without_an_offset_or_not_a_time_is_422(client, since):
    response = await client.get("/internal/revocations", params={"since": since})
    assert response.status_code == 422, response.text
