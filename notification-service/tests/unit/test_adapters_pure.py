"""The adapters' pure parts: mails built from outbox rows, dead letters read from AMQP
messages, replay headers, and what each failed send means."""

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import parseaddr

import aiosmtplib
import pytest

from interchange_common.messaging import (
    ATTEMPT_HEADER,
    DEAD_AT_HEADER,
    ERROR_HEADER,
    FAILED_AT_HEADER,
    ORIGINAL_ROUTING_KEY_HEADER,
)
from notification_service.adapters.broker import dead_letter_of, json_safe, replay_headers
from notification_service.adapters.mail import EVENT_ID_HEADER, Verdict, build_message, retry_delay, verdict_on

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def test_a_mail_is_the_same_message_however_often_it_is_built():
    event_id = uuid.uuid4()
    row = {
        "event_id": event_id,
        "to_address": "ada@example.com",
        "to_name": "Ada Lovelace, Countess",
        "subject": "Order confirmed: order 1",
        "body": "Hello Ada,\n\nTotal: 12.50 EUR\n",
        "created_at": T0,
    }
    first, again = (
        build_message(row=row, sender="Interchange <no-reply@interchange.local>"),
        build_message(row=row, sender="Interchange <no-reply@interchange.local>"),
    )
    assert first.as_bytes() == again.as_bytes()
    assert first["Message-ID"] == f"<{event_id}@interchange.local>"
    assert first[EVENT_ID_HEADER] == str(event_id)
    assert parseaddr(first["To"]) == ("Ada Lovelace, Countess", "ada@example.com")
    assert "Total: 12.50 EUR" in first.get_content()


@pytest.mark.parametrize(
    ("error", "verdict"),
    [
        (
            aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(550, "no user", "x@y")]),
            Verdict.NEVER,
        ),
        (aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(450, "busy", "x@y")]), Verdict.LATER),
        (aiosmtplib.SMTPDataError(554, "rejected"), Verdict.NEVER),
        (aiosmtplib.SMTPDataError(451, "local error"), Verdict.LATER),
        (aiosmtplib.SMTPNotSupported("SMTPUTF8 is needed for this address"), Verdict.NEVER),
        (UnicodeEncodeError("ascii", "jörg", 1, 2, "not ASCII"), Verdict.NEVER),
        (ValueError("Header values may not contain linefeed"), Verdict.NEVER),
        (aiosmtplib.SMTPConnectError("refused"), Verdict.SERVER_DOWN),
        (aiosmtplib.SMTPServerDisconnected("gone"), Verdict.SERVER_DOWN),
        (aiosmtplib.SMTPTimeoutError("slow"), Verdict.SERVER_DOWN),
        (ConnectionRefusedError(), Verdict.SERVER_DOWN),
    ],
)
def test_only_the_servers_state_stops_the_line(error, verdict):
    assert verdict_on(error) is verdict


def test_mails_refused_for_now_wait_longer_each_time_up_to_an_hour():
    waits = [retry_delay(n).total_seconds() for n in range(1, 12)]
    assert waits[:3] == [60, 120, 240]
    assert waits == sorted(waits)
    assert max(waits) == 3600


def test_nothing_a_user_typed_can_add_a_header():
    row = {
        "event_id": uuid.uuid4(),
        "to_address": "mallory@example.com",
        "to_name": "Mallory\r\nBcc: victim@example.com",
        "subject": "Order confirmed\nX-Evil: 1",
        "body": "Hello\n",
        "created_at": T0,
    }
    message = build_message(row=row, sender="Interchange <no-reply@interchange.local>")
    assert message["Bcc"] is None
    assert message["X-Evil"] is None
    assert parseaddr(message["To"]) == ("Mallory Bcc: victim@example.com", "mallory@example.com")
    assert b"\nBcc:" not in message.as_bytes()


@pytest.mark.parametrize(
    "name",
    [
        "Ada\u200d👩\u200d💻 Lovelace",
        "مهرداد\u200cزاده",  # noqa: RUF001  # Persian letters, on purpose
        "山田\u3000太郎",
        'Zoë O\'Brien, "Ada"',
        "Zoë, victim@example.org,",  # not one more recipient
    ],
)
def test_a_name_comes_through_the_to_header_as_it_was_typed(name):
    row = {
        "event_id": uuid.uuid4(),
        "to_address": "ada@example.com",
        "to_name": name,
        "subject": "Order confirmed",
        "body": "Hello\n",
        "created_at": T0,
    }
    sent = build_message(row=row, sender="Interchange <no-reply@interchange.local>").as_bytes()
    assert sent.isascii()  # RFC 2047 encoded words: no SMTPUTF8 needed
    received = BytesParser(_class=EmailMessage, policy=policy.default).parsebytes(sent)
    [address] = received["To"].addresses
    assert (address.display_name, address.addr_spec) == (name, "ada@example.com")


def test_a_name_that_was_never_checked_cannot_reorder_or_break_the_to_header():
    row = {
        "event_id": uuid.uuid4(),
        "to_address": "mallory@example.com",
        "to_name": "Mallory\u202eecila\u202c\x00\x85Bcc: victim@example.com",
        "subject": "Order confirmed",
        "body": "Hello\n",
        "created_at": T0,
    }
    received = BytesParser(_class=EmailMessage, policy=policy.default).parsebytes(
        build_message(row=row, sender="Interchange <no-reply@interchange.local>").as_bytes()
    )
    assert received["Bcc"] is None
    [address] = received["To"].addresses
    assert address.display_name == "Mallory ecila Bcc: victim@example.com"
    assert address.addr_spec == "mallory@example.com"


@dataclass
class FakeIncoming:
    body: bytes
    headers: dict[str, object]
    message_id: str | None = field(default_factory=lambda: str(uuid.uuid4()))
    routing_key: str = "notification-service.dead"
    correlation_id: str | None = "corr-1"
    timestamp: datetime | None = None


def test_a_dead_message_keeps_its_failure_story():
    timeline = [T0.isoformat(), T0.replace(second=1).isoformat()]
    message = FakeIncoming(
        body=b'{"id": 1}',
        headers={
            ATTEMPT_HEADER: 2,
            ERROR_HEADER: b"RecipientUnknown: user x",
            ORIGINAL_ROUTING_KEY_HEADER: "order.placed",
            FAILED_AT_HEADER: timeline,
            DEAD_AT_HEADER: T0.replace(second=1).isoformat(),
            "stream_id": "order-1",
        },
    )
    dead = dead_letter_of(message, now=T0.replace(minute=5))
    assert (dead.routing_key, dead.attempts, dead.error) == ("order.placed", 2, "RecipientUnknown: user x")
    assert dead.failed_at == (T0, T0.replace(second=1))
    assert dead.dead_at == T0.replace(second=1)
    assert dead.body == b'{"id": 1}'
    assert dead.correlation_id == "corr-1"
    assert dead.headers["stream_id"] == "order-1"


def test_a_dead_message_without_headers_is_still_stored():
    dead = dead_letter_of(FakeIncoming(body=b"\xff", headers={}, message_id=None), now=T0)
    assert (dead.message_id, dead.routing_key, dead.attempts, dead.failed_at, dead.dead_at) == (
        "",
        "notification-service.dead",
        0,
        (),
        T0,
    )


def test_header_values_become_json():
    assert json_safe({"a": b"x\x00y", "b": [T0, Decimal("1.5")], "c": {"d": None, "e": True}}) == {
        "a": "x\ufffdy",
        "b": [T0.isoformat(), "1.5"],
        "c": {"d": None, "e": True},
    }


def test_a_replayed_message_starts_again_under_its_original_routing_key():
    dead = dead_letter_of(
        FakeIncoming(
            body=b"{}",
            headers={
                ATTEMPT_HEADER: 4,
                ERROR_HEADER: "boom",
                FAILED_AT_HEADER: [T0.isoformat()],
                DEAD_AT_HEADER: T0.isoformat(),
                ORIGINAL_ROUTING_KEY_HEADER: "order.placed",
                "stream_id": "order-1",
            },
        ),
        now=T0,
    )
    assert replay_headers(dead) == {ORIGINAL_ROUTING_KEY_HEADER: "order.placed", "stream_id": "order-1"}
