"""The adapters' pure parts: mails built from outbox rows, dead letters read from AMQP
messages, replay headers, and which SMTP answers mean "never"."""

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
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
from notification_service.adapters.mail import EVENT_ID_HEADER, _refused_for_good, build_message

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
    ("error", "never"),
    [
        (aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(550, "no such user", "x@y")]), True),
        (aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(451, "try later", "x@y")]), False),
        (aiosmtplib.SMTPDataError(554, "rejected"), True),
        (aiosmtplib.SMTPDataError(421, "closing"), False),
        (aiosmtplib.SMTPConnectError("refused"), False),
        (ConnectionRefusedError(), False),
    ],
)
def test_only_a_5xx_about_the_mail_gives_up(error, never):
    assert _refused_for_good(error) is never


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
