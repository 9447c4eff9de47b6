"""Sends the mail outbox over SMTP (aiosmtplib).

    MailDispatcher   a background task: takes the oldest unsent mail under a row lock
                     (FOR UPDATE SKIP LOCKED: with several instances, each mail has one
                     sender), hands it to the SMTP server, and marks it sent in the same
                     transaction once the server accepted it. Sleeps on LISTEN until a
                     handler queues a mail (NOTIFY at commit). When the server is down
                     the mail stays queued and the dispatcher tries again with a growing,
                     jittered pause (run_forever). A problem with one mail never holds
                     up the others: refused for now (4xx), it is tried again later
                     (1, 2, 4 … minutes, given up after 10 tries); refused for good
                     (5xx) or impossible to send as it is (say, an address the server
                     cannot take), it is given up, logged and kept.

At least once: a crash after the server accepted a mail and before it was marked sends
it again, with the same Message-ID (derived from the event id), so the mailbox can tell.
"""

import contextlib
import email.utils
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from enum import Enum
from typing import Any

import aiosmtplib
import asyncpg
from prometheus_client import Counter

from interchange_common.tasks import run_forever
from interchange_common.text import without_unsafe
from notification_service.adapters.errors import MailServerUnavailable
from notification_service.adapters.listening import drain_when_notified
from notification_service.adapters.store import MAIL_CHANNEL
from notification_service.domain.model import message_id_of

_log = logging.getLogger(__name__)

EVENT_ID_HEADER = "X-Interchange-Event-Id"
_MAX_ERROR_LENGTH = 500
MAX_ATTEMPTS = 10  # refusals for now before a mail is given up
RETRY_FIRST_SECONDS = 60.0
RETRY_MAX_SECONDS = 3600.0

MAILS_SENT = Counter("notification_mails_sent_total", "Mails the SMTP server accepted")
MAIL_FAILURES = Counter("notification_mail_failures_total", "Mail sends that failed", ["kind"])


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    host: str
    port: int
    timeout_seconds: float
    start_tls: bool
    sender: str  # the From header, e.g. "Interchange <no-reply@interchange.local>"


def _header_text(value: str) -> str:
    """A header value from user data. The user service checked names, but this
    adapter does not count on it: line breaks, control characters and bidirectional
    overrides become spaces, so nothing a user typed can add a header or reorder one
    on screen. Joiners stay (a Persian name, 👩‍💻); the email package encodes any
    non-ASCII text (RFC 2047)."""
    return without_unsafe(value)


def build_message(*, row: Any, sender: str) -> EmailMessage:
    """The mail for one outbox row: the same row always makes the same message."""
    message = EmailMessage()
    message["From"] = sender
    # An Address, not formataddr's text: the email package re-parses that text and, for
    # a name with non-ASCII letters and a comma ("Zoë, x@example.org"), writes a To
    # header that a mail client reads as other recipients, the user's own address lost.
    message["To"] = Address(display_name=_header_text(row["to_name"]), addr_spec=row["to_address"])
    message["Subject"] = _header_text(row["subject"])
    message["Date"] = email.utils.format_datetime(row["created_at"])
    message["Message-ID"] = message_id_of(event_id=row["event_id"])
    message[EVENT_ID_HEADER] = str(row["event_id"])
    message.set_content(row["body"])
    return message


class Verdict(Enum):
    """What one failed send means."""

    SERVER_DOWN = "server down"  # nothing can be sent now: pause, then try again
    LATER = "later"  # this mail was refused for now (4xx): try it again later
    NEVER = "never"  # this mail can never be sent as it is: give it up


_SERVER_DOWN = (
    aiosmtplib.SMTPConnectError,
    aiosmtplib.SMTPConnectTimeoutError,
    aiosmtplib.SMTPServerDisconnected,
    aiosmtplib.SMTPTimeoutError,
    ConnectionError,
    TimeoutError,
)


def verdict_on(error: Exception) -> Verdict:
    """Only the server's own state stops the line; a problem with one mail never does."""
    if isinstance(error, _SERVER_DOWN):
        return Verdict.SERVER_DOWN
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
        codes = [refused.code for refused in error.recipients] or [550]
        return Verdict.NEVER if all(code >= 500 for code in codes) else Verdict.LATER
    if isinstance(error, aiosmtplib.SMTPResponseException):
        return Verdict.LATER if 400 <= error.code < 500 else Verdict.NEVER
    if isinstance(error, OSError):
        return Verdict.SERVER_DOWN
    # Headers that cannot be written, an address the server cannot take (SMTPUTF8),
    # anything else about this one message.
    return Verdict.NEVER


def retry_delay(attempts: int) -> timedelta:
    """After a mail's n-th refusal for now: 1, 2, 4 … minutes, at most an hour."""
    return timedelta(seconds=min(RETRY_FIRST_SECONDS * 2 ** min(attempts - 1, 16), RETRY_MAX_SECONDS))


class MailDispatcher:
    """Sends queued mails in order; see the module's docstring for the guarantees."""

    def __init__(self, *, dsn: str, smtp: SmtpSettings) -> None:
        self._dsn = dsn
        self._smtp = smtp

    async def run(self) -> None:
        await run_forever(name="mail dispatcher", session=self._session)

    async def _session(self, connected: Callable[[], None]) -> None:
        await drain_when_notified(dsn=self._dsn, channel=MAIL_CHANNEL, drain=self._drain, connected=connected)

    async def _drain(self, conn: asyncpg.Connection) -> float | None:
        await self._send_pending(conn)
        # Mails put off for later wake the loop when they are due.
        due_in = await conn.fetchval(
            "SELECT extract(epoch FROM min(next_attempt_at) - now()) FROM mail_outbox"
            " WHERE sent_at IS NULL AND given_up_at IS NULL"
        )
        return None if due_in is None else float(due_in)

    async def _send_pending(self, conn: asyncpg.Connection) -> None:
        client: aiosmtplib.SMTP | None = None
        try:
            while True:
                down: Exception | None = None
                async with conn.transaction():
                    row = await conn.fetchrow(
                        "SELECT seq, event_id, to_address, to_name, subject, body, created_at, attempts"
                        " FROM mail_outbox WHERE sent_at IS NULL AND given_up_at IS NULL AND next_attempt_at <= now()"
                        " ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED"
                    )
                    if row is None:
                        break
                    try:
                        if client is None:
                            client = await self._connect()
                        await client.send_message(build_message(row=row, sender=self._smtp.sender))
                    except Exception as e:  # a failed send is judged below; none may stop the line
                        verdict = verdict_on(e)
                        await self._record_failure(conn=conn, row=row, error=e, verdict=verdict)
                        if verdict is Verdict.SERVER_DOWN:
                            down = e
                        # The next mail gets a fresh session: no state left from the failure.
                        if client is not None:
                            client.close()
                        client = None
                    else:
                        await conn.execute("UPDATE mail_outbox SET sent_at = now() WHERE seq = $1", row["seq"])
                        MAILS_SENT.inc()
                        _log.info("mail sent", extra={"event_id": str(row["event_id"]), "seq": row["seq"]})
                if down is not None:  # after the commit that recorded the attempt
                    raise MailServerUnavailable(f"{self._smtp.host}:{self._smtp.port} did not take a mail") from down
            if client is not None:  # drained: say goodbye properly
                with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                    await client.quit()
        finally:
            # On every other way out (an error, a cancellation) just drop the connection:
            # awaiting a polite QUIT here could swallow the cancellation.
            if client is not None:
                client.close()

    async def _connect(self) -> aiosmtplib.SMTP:
        client = aiosmtplib.SMTP(
            hostname=self._smtp.host,
            port=self._smtp.port,
            timeout=self._smtp.timeout_seconds,
            start_tls=self._smtp.start_tls,
        )
        await client.connect()
        return client

    async def _record_failure(self, *, conn: asyncpg.Connection, row: Any, error: Exception, verdict: Verdict) -> None:
        """Note the failed attempt on the row: when to try it again, or that it is given up."""
        detail = f"{type(error).__name__}: {error}"[:_MAX_ERROR_LENGTH]
        attempts = int(row["attempts"]) + 1
        event = {"event_id": str(row["event_id"]), "attempts": attempts, "error": type(error).__name__}
        if verdict is Verdict.NEVER or (verdict is Verdict.LATER and attempts >= MAX_ATTEMPTS):
            await conn.execute(
                "UPDATE mail_outbox SET attempts = $2, last_error = $3, given_up_at = now() WHERE seq = $1",
                row["seq"],
                attempts,
                detail,
            )
            MAIL_FAILURES.labels("given_up").inc()
            _log.error("mail given up", extra=event)
        elif verdict is Verdict.LATER:
            await conn.execute(
                "UPDATE mail_outbox SET attempts = $2, last_error = $3, next_attempt_at = now() + $4 WHERE seq = $1",
                row["seq"],
                attempts,
                detail,
                retry_delay(attempts),
            )
            MAIL_FAILURES.labels("deferred").inc()
            _log.warning("mail refused for now", extra=event)
        else:
            await conn.execute(
                "UPDATE mail_outbox SET attempts = $2, last_error = $3 WHERE seq = $1", row["seq"], attempts, detail
            )
            MAIL_FAILURES.labels("unavailable").inc()
            _log.warning("mail server unavailable", extra=event)
