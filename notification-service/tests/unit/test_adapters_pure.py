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
from notification_service.adapters.mail import Verdict, retry_delay, verdict_on
from notification_service.adapters.mail_format import EVENT_ID_HEADER, MailFormat, build_message

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


SENDER = "Interchange <no-reply@interchange.local>"
FORMAT = MailFormat(sender=SENDER)
parse_mail = BytesParser(_class=EmailMessage, policy=policy.default).parsebytes


def outbox_row(**changes):
    row = {
        "event_id": uuid.uuid4(),
        "to_address": "ada@example.com",
        "to_name": "Ada Lovelace, Countess",
        "subject": "Order confirmed: order 1",
        "body": "Hello Ada,\n\nTotal: 12.50 EUR\n",
        "created_at": T0,
    }
    return {**row, **changes}


def written(row):
    """The bytes MailFormat sends for the row (it must take the row)."""
    envelope = FORMAT.envelope(row)
    assert envelope is not None
    return envelope.content


def by_email_package(row):
    return build_message(row=row, sender=SENDER).as_bytes(policy=policy.SMTP)


# Both ways a mail is written must keep the same promises.
WRITERS = pytest.mark.parametrize("write", [written, by_email_package], ids=["mail_format", "email_package"])


@WRITERS
def test_a_mail_is_the_same_message_however_often_it_is_built(write):
    row = outbox_row()
    first, again = write(row), write(row)
    assert first == again
    received = parse_mail(first)
    assert received["Message-ID"] == f"<{row['event_id']}@interchange.local>"
    assert received[EVENT_ID_HEADER] == str(row["event_id"])
    assert parseaddr(received["To"]) == ("Ada Lovelace, Countess", "ada@example.com")
    assert "Total: 12.50 EUR" in received.get_content()


def test_the_written_mail_says_what_the_email_package_would():
    rows = [
        outbox_row(),
        outbox_row(to_name="Ada", subject="Order cancelled: order 2", body="Hello Zoë,\n\n  1 x A at 1 EUR\n"),
        outbox_row(to_name="J. R. R. Tolkien", body="x" * 200 + "\n.\nend"),
        outbox_row(to_name="", subject="Größe: 🎉"),
        outbox_row(to_name="山田\u3000太郎", body="", subject=""),
    ]
    for row in rows:
        mine, theirs = parse_mail(written(row)), parse_mail(by_email_package(row))
        for header in ("From", "To", "Subject", "Date", "Message-ID", EVENT_ID_HEADER, "Content-Type", "MIME-Version"):
            assert str(mine[header]) == str(theirs[header]), header
        assert mine["To"].addresses == theirs["To"].addresses
        assert mine.get_content().replace("\r\n", "\n") == theirs.get_content().replace("\r\n", "\n")
        assert not mine.defects


def test_the_written_mail_is_7_bit_in_crlf_lines_within_78_characters():
    row = outbox_row(
        to_name="Zoë " * 25 + "O'Brien",  # 100 characters: several encoded words
        subject="Order confirmed: order " + "🎉" * 40,
        body="Hello Zoë,\r\n" + "ü" * 120 + "\rTotal\n\n",
    )
    content = written(row)
    assert content.isascii()
    head = content.partition(b"\r\n\r\n")[0]
    assert b"\n" not in content.replace(b"\r\n", b"")
    assert b"\r" not in content.replace(b"\r\n", b"")
    assert all(len(line) <= 78 for line in content.split(b"\r\n"))
    assert b"Content-Transfer-Encoding: quoted-printable" in head
    received = parse_mail(content)
    assert received.get_content() == "Hello Zoë,\r\n" + "ü" * 120 + "\r\nTotal\r\n\r\n"
    assert str(received["Subject"]) == row["subject"]


def test_a_plain_ascii_body_goes_as_it_is():
    content = written(outbox_row(body="Hello Ada,\n\n.\nTotal: 12.50 EUR\n"))
    assert b"Content-Transfer-Encoding: 7bit" in content
    assert content.endswith(b"\r\n\r\nHello Ada,\r\n\r\n.\r\nTotal: 12.50 EUR\r\n")


def test_the_envelope_is_the_senders_and_the_recipients_address():
    envelope = FORMAT.envelope(outbox_row(to_address="a.b+c@mail.example.com"))
    assert envelope is not None
    assert (envelope.sender, envelope.recipient) == ("no-reply@interchange.local", "a.b+c@mail.example.com")


@pytest.mark.parametrize(
    "address", ["jörg@example.com", '"ada lovelace"@example.com', "ada@[127.0.0.1]", "ada@example.com\r\nX: 1", "ada"]
)
def test_an_address_that_is_not_plain_is_left_to_the_email_package(address):
    assert FORMAT.envelope(outbox_row(to_address=address)) is None


@pytest.mark.parametrize("sender", ["Interchänge <nö-reply@interchange.local>", "a@x.example, b@x.example"])
def test_a_sender_that_is_not_one_plain_address_leaves_every_mail_to_the_email_package(sender):
    assert MailFormat(sender=sender).envelope(outbox_row()) is None


def test_a_name_that_looks_like_an_encoded_word_is_shown_as_typed():
    name = "=?utf-8?q?Admin?="
    [address] = parse_mail(written(outbox_row(to_name=name)))["To"].addresses
    assert address.display_name == name


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


@WRITERS
def test_nothing_a_user_typed_can_add_a_header(write):
    row = outbox_row(
        to_address="mallory@example.com",
        to_name="Mallory\r\nBcc: victim@example.com",
        subject="Order confirmed\nX-Evil: 1",
    )
    sent = write(row)
    received = parse_mail(sent)
    assert received["Bcc"] is None
    assert received["X-Evil"] is None
    assert parseaddr(str(received["To"])) == ("Mallory Bcc: victim@example.com", "mallory@example.com")
    assert b"\nBcc:" not in sent
    assert b"\nX-Evil:" not in sent


@WRITERS
@pytest.mark.parametrize(
    "name",
    [
        "Ada\u200d👩\u200d💻 Lovelace",
        "مهرداد\u200cزاده",  # noqa: RUF001  # Persian letters, on purpose
        "山田\u3000太郎",
        'Zoë O\'Brien, "Ada"',
        "Zoë, victim@example.org,",  # not one more recipient
        'Ada "the Countess" \\ Lovelace',
    ],
)
def test_a_name_comes_through_the_to_header_as_it_was_typed(write, name):
    sent = write(outbox_row(to_name=name, subject="Order confirmed"))
    assert sent.isascii()  # RFC 2047 encoded words: no SMTPUTF8 needed
    [address] = parse_mail(sent)["To"].addresses
    assert (address.display_name, address.addr_spec) == (name, "ada@example.com")


@WRITERS
def test_a_name_that_was_never_checked_cannot_reorder_or_break_the_to_header(write):
    row = outbox_row(
        to_address="mallory@example.com", to_name="Mallory\u202eecila\u202c\x00\x85Bcc: victim@example.com"
    )
    received = parse_mail(write(row))
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
