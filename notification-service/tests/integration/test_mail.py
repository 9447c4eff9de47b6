"""The mail dispatcher against a real SMTP server: one sender per mail, and refusals."""

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from interchange_common.tasks import background
from notification_service.adapters.mail import (
    RETRY_FIRST_SECONDS,
    TAKEN_RECHECK_SECONDS,
    MailDispatcher,
    SmtpSettings,
)
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


def dispatcher(database_url, smtp, **options):
    settings = SmtpSettings(
        host="127.0.0.1", port=smtp.port, timeout_seconds=5, start_tls=False, sender="Interchange <no-reply@i.local>"
    )
    return MailDispatcher(dsn=database_url, smtp=settings, **options)


async def connect(database_url):
    return await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))


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


async def test_one_smtp_session_carries_the_mails_of_several_drains_and_is_closed_once_idle(
    database_url, db, smtp, eventually
):
    first, second = mail_to("one@example.com"), mail_to("two@example.com")
    async with background(dispatcher(database_url, smtp, idle_seconds=1.0).run()):
        await queue(database_url, [first])
        await smtp.wait_for(first.event_id)
        await queue(database_url, [second])  # its own commit, its own drain
        await smtp.wait_for(second.event_id)
        assert smtp.sessions == 1
        await eventually(lambda: _true(not smtp.open), what="the idle session to be closed")
        third = mail_to("three@example.com")
        await queue(database_url, [third])
        await smtp.wait_for(third.event_id)
    assert smtp.sessions == 2
    assert await db.fetchval("SELECT count(*) FROM mail_outbox WHERE attempts > 0") == 0


async def test_a_kept_session_the_server_hung_up_on_is_replaced_and_the_mail_goes_once(
    database_url, db, smtp, eventually
):
    first, second = mail_to("one@example.com"), mail_to("two@example.com")
    async with background(dispatcher(database_url, smtp).run()):
        await queue(database_url, [first])
        await smtp.wait_for(first.event_id)
        smtp.hang_up_kept_sessions = True  # the kept session's next mail is answered 421
        await queue(database_url, [second])
        await smtp.wait_for(second.event_id)
        await eventually(
            lambda: db.fetchval("SELECT count(*) = 0 FROM mail_outbox WHERE sent_at IS NULL"), what="all marked sent"
        )
    assert smtp.sessions == 2
    assert len(smtp.with_event(second.event_id)) == 1
    # Not a failure of the mail: nothing recorded against it.
    row = await db.fetchrow("SELECT attempts, last_error FROM mail_outbox WHERE event_id = $1", second.event_id)
    assert (row["attempts"], row["last_error"]) == (0, None)


async def test_a_mail_in_another_dispatchers_hands_is_looked_at_again_later_not_at_once(database_url, db, smtp):
    held = mail_to("held@example.com")
    await queue(database_url, [held])
    other = await connect(database_url)  # another dispatcher, sending it
    conn = await connect(database_url)
    try:
        async with other.transaction():
            await other.execute("SELECT 1 FROM mail_outbox WHERE event_id = $1 FOR UPDATE", held.event_id)
            again_in = await dispatcher(database_url, smtp).drain(conn)
            assert again_in is not None
            assert again_in >= TAKEN_RECHECK_SECONDS  # no busy loop while the other one sends
            assert smtp.with_event(held.event_id) == []
        # The other one died with it (its transaction rolled back, no NOTIFY): the
        # next look, when the pause is over, sends it.
        await dispatcher(database_url, smtp).drain(conn)
        assert len(await smtp.wait_for(held.event_id)) == 1
    finally:
        await other.close()
        await conn.close()


async def test_mails_beyond_one_batch_are_all_sent_once(database_url, db, smtp, eventually):
    mails = [mail_to(f"b{n}@example.com") for n in range(7)]
    await queue(database_url, mails)
    async with background(dispatcher(database_url, smtp, batch_size=3).run()):
        for mail in mails:
            await smtp.wait_for(mail.event_id)
        await eventually(
            lambda: db.fetchval("SELECT count(*) = 0 FROM mail_outbox WHERE sent_at IS NULL"), what="all marked sent"
        )
    assert sorted(message["X-Interchange-Event-Id"] for message in smtp.mails) == sorted(
        str(mail.event_id) for mail in mails
    )


async def _true(value):
    return value


async def test_a_mail_another_instance_queued_is_sent_here_too(database_url, db, smtp):
    theirs = mail_to("theirs@example.com")  # queued by a store that names no instance
    async with background(dispatcher(database_url, smtp, instance="this-instance").run()):
        await queue(database_url, [theirs])
        assert len(await smtp.wait_for(theirs.event_id)) == 1


async def test_a_drain_looks_again_when_the_first_mail_put_off_is_due(database_url, db, smtp):
    busy = mail_to("busy@example.com")
    smtp.defer.add(busy.to_address)
    await queue(database_url, [busy])
    conn = await connect(database_url)
    try:
        # Refused for now by this drain: due again in a minute.
        again_in = await dispatcher(database_url, smtp).drain(conn)
        assert again_in is not None
        assert RETRY_FIRST_SECONDS - 5 < again_in <= RETRY_FIRST_SECONDS
        # A later drain (another dispatcher's, say) finds it pending and not yet due.
        again_in = await dispatcher(database_url, smtp).drain(conn)
        assert again_in is not None
        assert RETRY_FIRST_SECONDS - 5 < again_in <= RETRY_FIRST_SECONDS
    finally:
        await conn.close()
    assert smtp.with_event(busy.event_id) == []
