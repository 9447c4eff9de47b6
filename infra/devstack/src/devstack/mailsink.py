"""A local SMTP sink for native runs: what Mailpit is under compose.

A real SMTP server (aiosmtpd) on loopback that accepts every message and keeps it
in a Maildir (``.run/mail`` for ``make up``; read it with any mail client, or
``python -m mailbox``-style code as the tests do). It runs in a thread of the
process that starts the stack and stops with it.
"""

import asyncio
import email.policy
import mailbox
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any, Protocol

from aiosmtpd.controller import Controller


class Mailbox(Protocol):
    """Where tests read the mail a stack sent (this sink, or a Mailpit's API)."""

    def to(self, address: str) -> list[EmailMessage]: ...


class _KeepInMaildir:
    def __init__(self, maildir: Path) -> None:
        self._maildir = maildir

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # aiosmtpd's hook name
        box = mailbox.Maildir(self._maildir, create=True)
        box.add(envelope.original_content or envelope.content)
        return "250 Message accepted for delivery"


class MailSink:
    def __init__(self, *, maildir: Path, port: int, host: str = "127.0.0.1") -> None:
        self.maildir = maildir
        self.host = host
        self.port = port
        # Our own loop, closed on stop: aiosmtpd's default one is left open.
        self._loop = asyncio.new_event_loop()
        self._controller = Controller(_KeepInMaildir(maildir), hostname=host, port=port, loop=self._loop)
        self._running = False
        self.thread_ids: list[int] = []  # the server's threads (native ids), for CPU accounting

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def start(self) -> None:
        self.maildir.parent.mkdir(parents=True, exist_ok=True)
        box = mailbox.Maildir(self.maildir, create=True)  # creates cur/, new/ and tmp/
        for sub in ("cur", "new", "tmp"):
            (self.maildir / sub).mkdir(exist_ok=True)
        box.close()
        before = _threads()
        self._controller.start()
        self.thread_ids = sorted(_threads() - before)
        self._running = True

    def stop(self) -> None:
        if self._running:
            self._controller.stop()
            self._running = False
        self._loop.close()

    def messages(self) -> list[EmailMessage]:
        """Every message received so far, oldest first."""
        return [message for _, message in self.keyed_messages()]

    def keyed_messages(self) -> list[tuple[str, EmailMessage]]:
        """Every message received so far with its key in the Maildir, oldest first."""
        box = mailbox.Maildir(self.maildir, create=True)
        parser = BytesParser(_class=EmailMessage, policy=email.policy.default)
        return [(key, parser.parsebytes(box.get_bytes(key))) for key in sorted(box.keys(), key=_arrival)]

    def raw(self, key: str) -> bytes | None:
        """The message stored under ``key`` as received, or None."""
        try:
            return mailbox.Maildir(self.maildir, create=True).get_bytes(key)
        except KeyError:
            return None

    def to(self, address: str) -> list[EmailMessage]:
        """The messages addressed to ``address``, oldest first."""
        return [message for message in self.messages() if address in str(message["To"])]


def _threads() -> set[int]:
    return {int(entry.name) for entry in Path("/proc/self/task").iterdir()}


def body_of(message: EmailMessage) -> str:
    """The plain-text body of a message."""
    part = message.get_body(("plain",))
    return "" if part is None else str(part.get_content())


def _arrival(key: str) -> tuple[int, int, str]:
    """Python's Maildir names are ``<seconds>.M<microseconds>P<pid>Q<n>.<host>``."""
    seconds, _, rest = key.partition(".M")
    micros = rest.partition("P")[0]
    return (int(seconds), int(micros), key) if seconds.isdigit() and micros.isdigit() else (0, 0, key)
