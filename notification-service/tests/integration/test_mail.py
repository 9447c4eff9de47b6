"""The mail dispatcher against a real SMTP server: one sender per mail, and refusals."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from interchange_common.tasks import background
from notification_service.adapters.mail import MailDispatcher, SmtpSettings
from notification_service.adapters.store import SqlNotificationStore
from notification_service.domain.model import Mail

pytestmark = pytest.mark.integration


def mail_to(address):
    event_id = uuid.uuid4()
    return Mail(
        id=uuid.uuid4(),
        event_id=event_id,
        to_address=address,
        to_name="Test",
        subject=f"about {event_id}",
        body="Hello\n",
        created_at=datetime.now(UTC),
    )


async def queue(database_url, mails):
    engine = create_async_engine(database_url)
    try:
        async with SqlNotificationStore(engine=engine).transaction() as inbox:
            for mail in mails:
                await inbox.queue_mail(mail=mail)
    finally:
        await engine.dispose()


def dispatcher(database_url, smtp):
    settings = SmtpSettings(
        host="127.0.0.1", port=smtp.port, timeout_seconds=5, start_tls=False, sender="Interchange <no-reply@i.local>"
    )
    return MailDispatcher(dsn=database_url, smtp=settings)


async def test_two_dispatchers_send_each_mail_once(database_url, db, smtp, eventually):
    mails = [mail_to(f"m{n}@example.com") for n in range(40)]
    await queue(database_url, mails)
    async with background(dispatcher(database_url, smtp).run(), dispatcher(database_url, smtp).run()):
        for mail in mails:
            await smtp.wait_for(mail.event_id)
        await eventually(
            lambda: db.fetchval("SELECT count(*) = 0 FROM mail_outbox WHERE sent_at IS NULL"), what="all marked sent"
        )
    sent = [message["X-Interchange-Event-Id"] for message in smtp.mails]
    assert sorted(sent) == sorted(str(mail.event_id) for mail in mails)  # each once


async def test_a_mail_refused_for_good_is_given_up_and_blocks_nobody(database_url, db, smtp, eventually):
    refused, fine = mail_to("nobody@example.com"), mail_to("somebody@example.com")
    smtp.refuse.add(refused.to_address)
    await queue(database_url, [refused, fine])
    async with background(dispatcher(database_url, smtp).run()):
        await smtp.wait_for(fine.event_id)
        row = await eventually(
            lambda: db.fetchrow(
                "SELECT attempts, last_error FROM mail_outbox WHERE event_id = $1 AND given_up_at IS NOT NULL",
                refused.event_id,
            ),
            what="the refused mail to be given up",
        )
    assert row["attempts"] == 1
    assert "550" in row["last_error"]
    assert smtp.with_event(refused.event_id) == []


async def test_a_mail_refused_for_now_waits_for_its_turn_and_blocks_nobody(database_url, db, smtp, eventually):
    busy, fine = mail_to("busy@example.com"), mail_to("free@example.com")
    smtp.defer.add(busy.to_address)
    await queue(database_url, [busy, fine])
    async with background(dispatcher(database_url, smtp).run()):
        await smtp.wait_for(fine.event_id)
        row = await eventually(
            lambda: db.fetchrow(
                "SELECT attempts, last_error, next_attempt_at - now() AS wait, given_up_at FROM mail_outbox"
                " WHERE event_id = $1 AND attempts > 0",
                busy.event_id,
            ),
            what="the busy mailbox's mail to be put off",
        )
        assert (row["attempts"], row["given_up_at"]) == (1, None)
        assert "450" in row["last_error"]
        assert row["wait"].total_seconds() > 30  # about a minute: not tried again at once
        # Its time comes (moved forward here instead of waiting a minute): sent once.
        smtp.defer.clear()
        await db.execute("UPDATE mail_outbox SET next_attempt_at = now() WHERE event_id = $1", busy.event_id)
        await db.execute("NOTIFY mail_outbox")
        await smtp.wait_for(busy.event_id)
    assert len(smtp.with_event(busy.event_id)) == 1


async def test_a_mail_that_cannot_be_sent_as_it_is_is_given_up_and_blocks_nobody(database_url, db, smtp, eventually):
    unsendable, fine = mail_to("jörg@example.com"), mail_to("joerg@example.com")
    await queue(database_url, [unsendable, fine])
    async with background(dispatcher(database_url, smtp).run()):
        await smtp.wait_for(fine.event_id)
        row = await eventually(
            lambda: db.fetchrow(
                "SELECT attempts, last_error FROM mail_outbox WHERE event_id = $1 AND given_up_at IS NOT NULL",
                unsendable.event_id,
            ),
            what="the unsendable mail to be given up",
        )
    assert row["attempts"] == 1
    assert smtp.with_event(unsendable.event_id) == []


async def test_old_handled_ids_and_old_mails_are_purged_and_new_ones_kept(database_url, db, smtp, eventually):
    old, new = mail_to("old@example.com"), mail_to("new@example.com")
    await queue(database_url, [old, new])
    async with background(dispatcher(database_url, smtp).run()):
        await smtp.wait_for(old.event_id)
        await smtp.wait_for(new.event_id)
        await eventually(
            lambda: db.fetchval("SELECT count(*) = 0 FROM mail_outbox WHERE sent_at IS NULL"), what="all sent"
        )
    await db.execute("INSERT INTO processed_messages (message_id, routing_key) VALUES ('old', 'x'), ('new', 'x')")
    await db.execute("UPDATE processed_messages SET processed_at = now() - interval '8 days' WHERE message_id = 'old'")
    await db.execute("UPDATE mail_outbox SET sent_at = now() - interval '8 days' WHERE event_id = $1", old.event_id)
    engine = create_async_engine(database_url)
    try:
        purged = await SqlNotificationStore(engine=engine).purge(older_than=timedelta(days=7))
    finally:
        await engine.dispose()
    assert purged == 2
    assert await db.fetchval("SELECT array_agg(message_id) FROM processed_messages") == ["new"]
    assert await db.fetchval("SELECT array_agg(event_id) FROM mail_outbox") == [new.event_id]
