"""Sends the mail outbox over SMTP (aiosmtplib).

    MailDispatcher   a background task: takes the oldest unsent mails under row locks
                     (FOR UPDATE SKIP LOCKED: with several instances, each mail has one
                     sender), a batch at a time, hands them to the SMTP server one by
                     one, and marks those the server accepted sent in the same
                     transaction. Sleeps on LISTEN until a handler queues a mail
                     (NOTIFY at commit; adapters.listening). When the server is down
                     the mail stays queued and the dispatcher tries again with a
                     growing, jittered pause (run_forever). A problem with one mail
                     never holds up the others: refused for now (4xx), it is tried
                     again later (1, 2, 4 … minutes, given up after 10 tries); refused
                     for good (5xx) or impossible to send as it is (say, an address
                     the server cannot take), it is given up, logged and kept.

The SMTP session stays open between batches and is closed (QUIT) once it has been idle
for SMTP_IDLE_SECONDS; a kept session the server has dropped meanwhile is replaced
before the mail counts as failed. The mails' bytes come from adapters.mail_format.

At least once: a crash after the server accepted a mail and before its batch committed
sends it again (with the batch's other mails the server had accepted), with the same
Message-ID (derived from the event id), so the mailbox can tell.
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from typing import Any

import aiosmtplib
import asyncpg
from prometheus_client import Counter

from interchange_common import tracing
from interchange_common.tasks import run_forever
from notification_service.adapters.errors import MailServerUnavailable
from notification_service.adapters.listening import drain_when_notified
from notification_service.adapters.mail_format import MailFormat, build_message
from notification_service.adapters.store import MAIL_CHANNEL

_log = logging.getLogger(__name__)

_MAX_ERROR_LENGTH = 500
MAX_ATTEMPTS = 10  # refusals for now before a mail is given up
RETRY_FIRST_SECONDS = 60.0
RETRY_MAX_SECONDS = 3600.0
BATCH_SIZE = 10  # mails taken (and locked) per transaction
SMTP_IDLE_SECONDS = 10.0  # an SMTP session unused this long is closed
# A mail due now that a drain did not take is another dispatcher's, in flight: look
# again after this long, in case that one dies with it (its locks then go).
TAKEN_RECHECK_SECONDS = 1.0

# The oldest due mails no other dispatcher holds, locked; and in the same round trip,
# the seconds until the first pending mail not taken here is due (<= 0: due now, so in
# another dispatcher's hands), on a row of its own when none was taken.
_CLAIM = """
WITH taken AS (
    SELECT seq, event_id, to_address, to_name, subject, body, created_at, attempts, traceparent FROM mail_outbox
    WHERE sent_at IS NULL AND given_up_at IS NULL AND next_attempt_at <= now()
    ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED
), left_over AS (
    SELECT extract(epoch FROM min(next_attempt_at) - now()) AS due_in FROM mail_outbox
    WHERE sent_at IS NULL AND given_up_at IS NULL AND seq NOT IN (SELECT seq FROM taken)
)
SELECT left_over.due_in, taken.* FROM left_over LEFT JOIN taken ON true ORDER BY taken.seq
"""
_MARK_SENT = "UPDATE mail_outbox SET sent_at = now() WHERE seq = ANY($1::bigint[])"

MAILS_SENT = Counter("notification_mails_sent_total", "Mails the SMTP server accepted")
MAIL_FAILURES = Counter("notification_mail_failures_total", "Mail sends that failed", ["kind"])


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    host: str
    port: int
    timeout_seconds: float
    start_tls: bool
    sender: str  # the From header, e.g. "Interchange <no-reply@interchange.local>"


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


def _session_lost(error: Exception) -> bool:
    """A failure that says the session is gone rather than anything about the mail:
    the connection lost, or 421 (the server closing the channel)."""
    if isinstance(error, aiosmtplib.SMTPResponseException) and error.code == 421:
        return True
    return verdict_on(error) is Verdict.SERVER_DOWN


def retry_delay(attempts: int) -> timedelta:
    """After a mail's n-th refusal for now: 1, 2, 4 … minutes, at most an hour."""
    return timedelta(seconds=min(RETRY_FIRST_SECONDS * 2 ** min(attempts - 1, 16), RETRY_MAX_SECONDS))


class MailDispatcher:
    """Sends queued mails in order; see the module's docstring for the guarantees."""

    def __init__(
        self,
        *,
        dsn: str,
        smtp: SmtpSettings,
        batch_size: int = BATCH_SIZE,
        idle_seconds: float = SMTP_IDLE_SECONDS,
        instance: str = "",
    ) -> None:
        self._dsn = dsn
        self._instance = instance  # whose NOTIFYs wake it at once (adapters.listening)
        self._smtp = smtp
        self._format = MailFormat(sender=smtp.sender)
        self._batch = batch_size
        self._idle = idle_seconds
        self._client: aiosmtplib.SMTP | None = None
        self._last_used = 0.0  # loop time of the session's last mail

    async def run(self) -> None:
        await run_forever(name="mail dispatcher", session=self._session)

    async def _session(self, connected: Callable[[], None]) -> None:
        try:
            await drain_when_notified(
                dsn=self._dsn, channel=MAIL_CHANNEL, drain=self.drain, connected=connected, instance=self._instance
            )
        finally:
            # However the session ends (an error, a cancellation) just drop the SMTP
            # connection: awaiting a polite QUIT here could swallow the cancellation.
            self._drop()

    async def drain(self, conn: asyncpg.Connection) -> float | None:
        """Send what is due; the seconds until the next look (None: only when woken).
        A batch that came back short took every mail due: one queued since wakes the
        loop again (NOTIFY)."""
        taken, due_in = await self._send_batch(conn)
        while taken == self._batch:
            taken, due_in = await self._send_batch(conn)
        # Mails put off for later wake the loop when they are due.
        again_in = None if due_in is None else max(due_in, TAKEN_RECHECK_SECONDS)
        if self._client is not None:
            idle_left = self._idle - (asyncio.get_running_loop().time() - self._last_used)
            if idle_left <= 0:
                await self._quit()
            else:
                again_in = idle_left if again_in is None else min(again_in, idle_left)
        return again_in

    async def _send_batch(self, conn: asyncpg.Connection) -> tuple[int, float | None]:
        """Send the oldest due mails not in another dispatcher's hands: how many were
        taken, and the seconds until the first mail still pending is due (None: none is)."""
        down: Exception | None = None
        async with conn.transaction():
            rows = await conn.fetch(_CLAIM, self._batch)
            due: list[float] = [float(rows[0]["due_in"])] if rows[0]["due_in"] is not None else []
            taken = [row for row in rows if row["seq"] is not None]
            sent: list[Any] = []
            for row in taken:
                try:
                    # The mail's own span, in the trace of the event that queued it.
                    with tracing.continued_span(
                        "send mail",
                        parent=row["traceparent"],
                        kind=tracing.SpanKind.CLIENT,
                        attributes={"server.address": self._smtp.host, "server.port": self._smtp.port},
                    ):
                        await self._send(row)
                except Exception as e:  # a failed send is judged below; none may stop the line
                    verdict = verdict_on(e)
                    again = await self._record_failure(conn=conn, row=row, error=e, verdict=verdict)
                    if again is not None:
                        due.append(again.total_seconds())
                    # The next mail gets a fresh session: no state left from the failure.
                    self._drop()
                    if verdict is Verdict.SERVER_DOWN:
                        down = e
                        break
                else:
                    sent.append(row)
            if sent:
                await conn.execute(_MARK_SENT, [row["seq"] for row in sent])
        for row in sent:
            MAILS_SENT.inc()
            _log.info("mail sent", extra={"event_id": str(row["event_id"]), "seq": row["seq"]})
        if down is not None:  # after the commit that recorded the attempt
            raise MailServerUnavailable(f"{self._smtp.host}:{self._smtp.port} did not take a mail") from down
        return len(taken), min(due, default=None)

    async def _send(self, row: Any) -> None:
        """Hand one mail to the server, on the kept session when there is one."""
        client = self._client
        if client is not None and client.is_connected:
            try:
                await self._transfer(client=client, row=row)
            except Exception as e:
                if not _session_lost(e):
                    raise
                # The server dropped the kept session while it sat idle (a restart, its
                # own timeout): a fresh one decides whether the server is down. Had it
                # taken the mail before it went, the mail goes twice: at least once.
            else:
                self._last_used = asyncio.get_running_loop().time()
                return
        self._drop()
        client = self._client = await self._connect()
        await self._transfer(client=client, row=row)
        self._last_used = asyncio.get_running_loop().time()

    async def _transfer(self, *, client: aiosmtplib.SMTP, row: Any) -> None:
        envelope = self._format.envelope(row)
        if envelope is None:
            await client.send_message(build_message(row=row, sender=self._smtp.sender))
        else:
            await client.sendmail(envelope.sender, [envelope.recipient], envelope.content)

    async def _connect(self) -> aiosmtplib.SMTP:
        client = aiosmtplib.SMTP(
            hostname=self._smtp.host,
            port=self._smtp.port,
            timeout=self._smtp.timeout_seconds,
            start_tls=self._smtp.start_tls,
        )
        await client.connect()
        return client

    async def _quit(self) -> None:
        """Close the idle session politely."""
        client, self._client = self._client, None
        if client is not None:
            try:
                with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                    await client.quit()
            finally:
                client.close()

    def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    async def _record_failure(
        self, *, conn: asyncpg.Connection, row: Any, error: Exception, verdict: Verdict
    ) -> timedelta | None:
        """Note the failed attempt on the row: when to try it again, or that it is given
        up. How long until it is due again when it was put off for later."""
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
            return None
        if verdict is Verdict.LATER:
            delay = retry_delay(attempts)
            await conn.execute(
                "UPDATE mail_outbox SET attempts = $2, last_error = $3, next_attempt_at = now() + $4 WHERE seq = $1",
                row["seq"],
                attempts,
                detail,
                delay,
            )
            MAIL_FAILURES.labels("deferred").inc()
            _log.warning("mail refused for now", extra=event)
            return delay
        await conn.execute(
            "UPDATE mail_outbox SET attempts = $2, last_error = $3 WHERE seq = $1", row["seq"], attempts, detail
        )
        MAIL_FAILURES.labels("unavailable").inc()
        _log.warning("mail server unavailable", extra=event)
        return None
