"""Sends the mail outbox over SMTP (aiosmtplib).

    MailDispatcher   a background task: takes the oldest unsent mail under a row lock
                     (FOR UPDATE SKIP LOCKED: with several instances, each mail has one
                     sender), hands it to the SMTP server, and marks it sent in the same
                     transaction once the server accepted it. Sleeps on LISTEN until a
                     handler queues a mail (NOTIFY at commit). When the server is down
                     the mail stays queued and the dispatcher tries again with a growing,
                     jittered pause (run_forever). A mail the server refuses for good
                     (5xx) is given up, logged and kept, so it cannot block the others.

At least once: a crash after the server accepted a mail and before it was marked sends
it again, with the same Message-ID (derived from the event id), so the mailbox can tell.
"""

import asyncio
import email.utils
import logging
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import asyncpg
from prometheus_client import Counter

from interchange_common.tasks import run_forever, wait_alive
from notification_service.adapters.errors import MailServerUnavailable
from notification_service.adapters.store import MAIL_CHANNEL
from notification_service.domain.model import message_id_of

_log = logging.getLogger(__name__)

EVENT_ID_HEADER = "X-Interchange-Event-Id"
_MAX_ERROR_LENGTH = 500

MAILS_SENT = Counter("notification_mails_sent_total", "Mails the SMTP server accepted")
MAIL_FAILURES = Counter("notification_mail_failures_total", "Mail sends that failed", ["kind"])


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    host: str
    port: int
    timeout_seconds: float
    start_tls: bool
    sender: str  # the From header, e.g. "Interchange <no-reply@interchange.local>"


def build_message(*, row: Any, sender: str) -> EmailMessage:
    """The mail for one outbox row: the same row always makes the same message."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = email.utils.formataddr((row["to_name"], row["to_address"]))
    message["Subject"] = row["subject"]
    message["Date"] = email.utils.format_datetime(row["created_at"])
    message["Message-ID"] = message_id_of(event_id=row["event_id"])
    message[EVENT_ID_HEADER] = str(row["event_id"])
    message.set_content(row["body"])
    return message


def _refused_for_good(error: Exception) -> bool:
    """A 5xx answer about this mail: sending it again will not help."""
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
        return bool(error.recipients) and all(refused.code >= 500 for refused in error.recipients)
    if isinstance(error, aiosmtplib.SMTPSenderRefused | aiosmtplib.SMTPRecipientRefused | aiosmtplib.SMTPDataError):
        return error.code >= 500
    return False


class MailDispatcher:
    """Sends queued mails in order; see the module's docstring for the guarantees."""

    def __init__(self, *, dsn: str, smtp: SmtpSettings) -> None:
        self._dsn = dsn.replace("postgresql+asyncpg://", "postgresql://", 1)
        self._smtp = smtp

    async def run(self) -> None:
        await run_forever(name="mail dispatcher", session=self._session)

    async def _session(self, connected: Callable[[], None]) -> None:
        wake = asyncio.Event()
        conn = await asyncpg.connect(self._dsn)
        try:
            await conn.add_listener(MAIL_CHANNEL, lambda *_: wake.set())
            # A closed connection wakes the loop, whose next query then ends the session.
            conn.add_termination_listener(lambda _: wake.set())
            while True:
                wake.clear()
                await self._send_pending(conn)
                # Only a drained outbox resets the backoff: a server that is down makes
                # every session fail, and the pauses between them grow.
                connected()
                await wait_alive(conn, wake)
        finally:
            conn.terminate()

    async def _send_pending(self, conn: asyncpg.Connection) -> None:
        client: aiosmtplib.SMTP | None = None
        try:
            while True:
                failure: Exception | None = None
                async with conn.transaction():
                    row = await conn.fetchrow(
                        "SELECT seq, event_id, to_address, to_name, subject, body, created_at FROM mail_outbox"
                        " WHERE sent_at IS NULL AND given_up_at IS NULL ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED"
                    )
                    if row is None:
                        return
                    try:
                        if client is None:
                            client = await self._connect()
                        await client.send_message(build_message(row=row, sender=self._smtp.sender))
                    except (aiosmtplib.SMTPException, OSError) as e:
                        failure = await self._record_failure(conn=conn, row=row, error=e)
                        if failure is None:
                            # The next mail gets a fresh session: no state left from the refusal.
                            if client is not None:
                                client.close()
                            client = None
                            continue
                    else:
                        await conn.execute("UPDATE mail_outbox SET sent_at = now() WHERE seq = $1", row["seq"])
                        MAILS_SENT.inc()
                        _log.info("mail sent", extra={"event_id": str(row["event_id"]), "seq": row["seq"]})
                if failure is not None:  # after the commit that recorded the attempt
                    raise MailServerUnavailable(f"{self._smtp.host}:{self._smtp.port} did not take a mail") from failure
        finally:
            if client is not None and client.is_connected:
                try:
                    await client.quit()
                except (aiosmtplib.SMTPException, OSError):
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

    async def _record_failure(self, *, conn: asyncpg.Connection, row: Any, error: Exception) -> Exception | None:
        """Note the failed attempt on the row; the error to raise when the mail should be
        tried again later, None when it was given up for good."""
        detail = f"{type(error).__name__}: {error}"[:_MAX_ERROR_LENGTH]
        if _refused_for_good(error):
            await conn.execute(
                "UPDATE mail_outbox SET attempts = attempts + 1, last_error = $2, given_up_at = now() WHERE seq = $1",
                row["seq"],
                detail,
            )
            MAIL_FAILURES.labels("refused").inc()
            _log.error("mail refused for good", extra={"event_id": str(row["event_id"]), "error": detail})
            return None
        await conn.execute(
            "UPDATE mail_outbox SET attempts = attempts + 1, last_error = $2 WHERE seq = $1", row["seq"], detail
        )
        MAIL_FAILURES.labels("unavailable").inc()
        _log.warning("mail server unavailable", extra={"event_id": str(row["event_id"]), "error": type(error).__name__})
        return error
