"""The internal HTTP API against the real database: service tokens, actors, problems."""

import dataclasses
import logging
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from devstack.testing import assert_problem
from notification_service.adapters.store import SqlDeadLetterStore, SqlNotificationStore
from notification_service.domain.model import DeadLetter
from notification_service.domain.usecases import DeadLetters, Notifications

pytestmark = pytest.mark.integration

ADMIN = {"x-actor-id": str(uuid.uuid4()), "x-actor-roles": "user,admin"}
USER = {"x-actor-id": str(uuid.uuid4()), "x-actor-roles": "user"}


async def stored_dead_letter(service):
    now = datetime.now(UTC)
    dead_letter = DeadLetter(
        id=uuid.uuid4(),
        message_id=str(uuid.uuid4()),
        routing_key="order.placed",
        body=b'{"id": "x"}',
        headers={},
        correlation_id=None,
        error="RecipientUnknown: nobody",
        attempts=4,
        failed_at=(now,),
        dead_at=now,
        stored_at=now,
    )
    await service.container.dead_letters.record(dead_letter=dead_letter)
    return dead_letter


@pytest.mark.parametrize("authorization", [None, "Bearer nope", "Basic x"])
async def test_internal_routes_need_a_service_token(service, authorization):
    headers = {"authorization": authorization} if authorization else {}
    async with httpx.AsyncClient(transport=service.client._transport, base_url="http://n", headers=headers) as bare:
        for method, path in (
            ("GET", "/internal/notifications"),
            ("GET", "/internal/admin/dead-letters"),
            ("POST", f"/internal/admin/dead-letters/{uuid.uuid4()}/replay"),
            ("DELETE", f"/internal/admin/dead-letters/{uuid.uuid4()}"),
        ):
            assert_problem(await bare.request(method, path, headers=ADMIN), 401)


async def test_notifications_need_an_end_user(service, client_as):
    body = assert_problem(await service.client.get("/internal/notifications"), 401)
    assert "signed-in" in body["detail"]
    async with client_as("order-service") as other_service:
        assert_problem(await other_service.get("/internal/notifications"), 401)


@pytest.mark.parametrize(
    "query",
    ["page=0", "page=-1", "page=abc", "limit=0", "limit=abc", "limit=1.5", "page=99999999999999999999"],
)
async def test_bad_paging_is_422(service, query):
    body = assert_problem(await service.client.get(f"/internal/notifications?{query}", headers=USER), 422)
    assert body["errors"]
    assert_problem(await service.client.get(f"/internal/admin/dead-letters?{query}", headers=ADMIN), 422)


async def test_the_limit_is_capped(service):
    response = await service.client.get("/internal/notifications?page=3&limit=1000", headers=USER)
    assert response.status_code == 200
    assert response.json() == {"items": [], "total": 0, "page": 3, "limit": 100}


async def test_a_malformed_actor_id_is_400(service):
    assert_problem(await service.client.get("/internal/notifications", headers={"x-actor-id": "me"}), 400)


async def test_admin_routes_refuse_other_users(service):
    dead_letter = await stored_dead_letter(service)
    for method, path in (
        ("GET", "/internal/admin/dead-letters"),
        ("POST", f"/internal/admin/dead-letters/{dead_letter.id}/replay"),
        ("DELETE", f"/internal/admin/dead-letters/{dead_letter.id}"),
        ("DELETE", "/internal/admin/dead-letters/not-an-id"),
    ):
        assert_problem(await service.client.request(method, path, headers=USER), 403)
        assert_problem(await service.client.request(method, path), 401)  # the gateway, for nobody
    listed = (await service.client.get("/internal/admin/dead-letters", headers=ADMIN)).json()
    assert [item["id"] for item in listed["items"]] == [str(dead_letter.id)]


@pytest.mark.parametrize("raw", ["not-an-id", "123", str(uuid.uuid4()), "%20"])
async def test_unknown_or_malformed_dead_letter_ids_are_404(service, raw):
    assert_problem(await service.client.post(f"/internal/admin/dead-letters/{raw}/replay", headers=ADMIN), 404)
    assert_problem(await service.client.delete(f"/internal/admin/dead-letters/{raw}", headers=ADMIN), 404)


async def test_an_admin_lists_and_discards_dead_letters(service):
    dead_letter = await stored_dead_letter(service)
    listed = (await service.client.get("/internal/admin/dead-letters", headers=ADMIN)).json()
    [item] = listed["items"]
    assert item["message_id"] == dead_letter.message_id
    assert (item["routing_key"], item["attempts"], item["body"]) == ("order.placed", 4, {"id": "x"})
    assert (listed["total"], listed["page"], listed["limit"]) == (1, 1, 10)
    deleted = await service.client.delete(f"/internal/admin/dead-letters/{dead_letter.id}", headers=ADMIN)
    assert deleted.status_code == 204
    assert_problem(await service.client.delete(f"/internal/admin/dead-letters/{dead_letter.id}", headers=ADMIN), 404)
    assert (await service.client.get("/internal/admin/dead-letters", headers=ADMIN)).json()["total"] == 0


async def test_a_request_the_database_cannot_serve_is_a_retryable_503_that_changes_nothing(
    service, database_url, caplog
):
    """The pool's only connection is taken, and a checkout gives up after 0.2 s."""
    dead_letter = await stored_dead_letter(service)
    engine = create_async_engine(database_url, pool_size=1, max_overflow=0, pool_timeout=0.2)
    starved = dataclasses.replace(
        service.container,
        notifications=Notifications(store=SqlNotificationStore(engine=engine)),
        dead_letters=DeadLetters(store=SqlDeadLetterStore(engine=engine), republisher=service.container.republisher),
    )
    try:
        transport = httpx.ASGITransport(app=starved.http_app())
        authorization = {"authorization": service.client.headers["authorization"]}
        async with (
            engine.connect(),
            httpx.AsyncClient(transport=transport, base_url="http://n", headers=authorization) as client,
        ):
            for method, path, actor in (
                ("GET", "/internal/notifications", USER),
                ("GET", "/internal/admin/dead-letters", ADMIN),
                ("POST", f"/internal/admin/dead-letters/{dead_letter.id}/replay", ADMIN),
                ("DELETE", f"/internal/admin/dead-letters/{dead_letter.id}", ADMIN),
            ):
                caplog.clear()
                with caplog.at_level(logging.WARNING, logger="interchange.database"):
                    response = await client.request(method, path, headers=actor)
                body = assert_problem(response, 503)
                assert (response.headers["retry-after"], body["detail"]) == ("1", "the database is unavailable")
                [line] = [record for record in caplog.records if record.name == "interchange.database"]
                assert (line.levelname, line.error) == ("WARNING", "TimeoutError")
    finally:
        await engine.dispose()
    listed = (await service.client.get("/internal/admin/dead-letters", headers=ADMIN)).json()
    assert [item["id"] for item in listed["items"]] == [str(dead_letter.id)]


async def test_unknown_routes_and_methods_are_problems(service):
    assert_problem(await service.client.get("/internal/nope", headers=USER), 404)
    assert_problem(await service.client.put("/internal/notifications", headers=USER), 405)
