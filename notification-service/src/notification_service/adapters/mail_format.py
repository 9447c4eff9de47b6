"""The bytes of one outbox mail, as the dispatcher hands them to the SMTP server.

    MailFormat      writes the few headers a mail has (From, To, Subject, Date,
                    Message-ID, the event id, MIME) and its plain-text body straight
                    into bytes: 7-bit, CRLF line ends, lines folded before 78
                    characters, non-ASCII names and subjects as RFC 2047 encoded
                    words. The email package's header registry parses every header
                    it is given and parses it again to fold it; this writes what is
                    already known to be well formed.
    build_message   the email package's message for a row (EmailMessage): the mails
                    MailFormat leaves to it, those to an address that is not a plain
                    ASCII ``local@domain`` (quoted local parts, international
                    addresses that need SMTPUTF8), or from a MAIL_FROM that is not
                    one such address.

Either way the same row always makes the same message, and nothing a user typed can
add a header: text from users passes ``_header_text`` first, and is then written as
atoms, a quoted string or encoded words, none of which holds a line break.
"""

import base64
import binascii
import email.utils
import re
from collections.abc import Iterable
from dataclasses import dataclass
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from typing import Any

from interchange_common.text import without_unsafe
from notification_service.domain.model import message_id_of

EVENT_ID_HEADER = "X-Interchange-Event-Id"

_LINE = 78  # RFC 5322: lines SHOULD stay within 78 characters, CRLF not counted
_CRLF = b"\r\n"
# An address the fast path writes as it is: a dot-atom local part at a host name, in
# ASCII (the only kind user-service takes). Anything else goes through the email package.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ADDRESS = re.compile(
    rf"{_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
)
# A display name that can stand as it is: atoms separated by single spaces.
_ATOMS = re.compile(rf"{_ATEXT}(?: {_ATEXT})*")
# Printable ASCII: what a header may show without encoding (no controls, no DEL).
_PRINTABLE = re.compile(r"[ -~]*")
# An encoded word may hold 75 characters; "=?utf-8?b?" + 56 base64 characters + "?=" is
# 68, which leaves room for "Subject: " on the first line.
_ENCODED_WORD_BYTES = 42


def _header_text(value: str) -> str:
    """A header value from user data. The user service checked names, but this
    adapter does not count on it: line breaks, control characters and bidirectional
    overrides become spaces, so nothing a user typed can add a header or reorder one
    on screen. Joiners stay (a Persian name, 👩‍💻); non-ASCII text is encoded (RFC 2047)."""
    return without_unsafe(value)


def build_message(*, row: Any, sender: str) -> EmailMessage:
    """The mail for one outbox row through the email package: the same row always
    makes the same message."""
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


def _encoded_words(text: str) -> list[str]:
    """``text`` as RFC 2047 encoded words (UTF-8, base64), each whole characters and at
    most 75 characters long. A reader joins adjacent words without the space between."""
    words: list[str] = []
    chunk = bytearray()
    for character in text:
        encoded = character.encode()
        if chunk and len(chunk) + len(encoded) > _ENCODED_WORD_BYTES:
            words.append(f"=?utf-8?b?{base64.b64encode(chunk).decode('ascii')}?=")
            chunk.clear()
        chunk += encoded
    if chunk:
        words.append(f"=?utf-8?b?{base64.b64encode(chunk).decode('ascii')}?=")
    return words


def _plain(text: str) -> bool:
    """Text a header may show as it is: printable ASCII that no reader would take for
    an encoded word."""
    return _PRINTABLE.fullmatch(text) is not None and "=?" not in text


def _phrase(name: str) -> list[str]:
    """A display name (RFC 5322 phrase), as the parts a header may be folded between."""
    if not _plain(name):
        return _encoded_words(name)
    if _ATOMS.fullmatch(name) is None:
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    # Folding before a space keeps it: the reader unfolds to the same text.
    return name.split(" ")


def _header(name: str, parts: Iterable[str]) -> bytes:
    """``name: parts``, the parts joined by spaces, folded before a part that would
    take the line past 78 characters (a longer part stands alone on its line)."""
    lines: list[str] = []
    line = f"{name}:"
    for index, part in enumerate(parts):
        if index and len(line) + 1 + len(part) > _LINE:
            lines.append(line)
            line = ""
        line = f"{line} {part}"
    lines.append(line)
    return "\r\n".join(lines).encode("ascii") + _CRLF


def _body(text: str) -> tuple[bytes, bytes]:
    """The body and its Content-Transfer-Encoding: 7bit when it is ASCII in short
    lines (the usual mail), otherwise quoted-printable, which any server takes."""
    lines = text.encode().splitlines()
    content = _CRLF.join(lines) + _CRLF
    if content.isascii() and all(len(line) <= _LINE for line in lines):
        return content, b"7bit"
    return binascii.b2a_qp(content, istext=True), b"quoted-printable"


@dataclass(frozen=True, slots=True)
class Envelope:
    """What goes to the SMTP server for one mail: MAIL FROM, RCPT TO, and DATA."""

    sender: str
    recipient: str
    content: bytes


class MailFormat:
    """Writes outbox rows as the bytes sent over SMTP (see the module's docstring)."""

    def __init__(self, *, sender: str) -> None:
        head = EmailMessage(policy=policy.SMTP)
        head["From"] = sender
        addresses = head["From"].addresses
        self._from = policy.SMTP.fold_binary("From", head["From"])
        # The envelope sender, as aiosmtplib takes it from the From header; None when
        # From is not one plain address: then every mail goes through the email package.
        plain = len(addresses) == 1 and _PLAIN_ADDRESS.fullmatch(addresses[0].addr_spec) is not None
        self._sender: str | None = addresses[0].addr_spec if plain else None

    def envelope(self, row: Any) -> Envelope | None:
        """The mail for one outbox row, the same every time; None when it is left to
        the email package (build_message)."""
        address = row["to_address"]
        if self._sender is None or _PLAIN_ADDRESS.fullmatch(address) is None:
            return None
        name = _header_text(row["to_name"])
        subject = _header_text(row["subject"])
        event_id = row["event_id"]
        body, transfer_encoding = _body(row["body"])
        content = b"".join(
            (
                self._from,
                _header("To", [*_phrase(name), f"<{address}>"] if name else [address]),
                _header("Subject", subject.split(" ") if _plain(subject) else _encoded_words(subject)),
                b"Date: " + email.utils.format_datetime(row["created_at"]).encode("ascii") + _CRLF,
                b"Message-ID: " + message_id_of(event_id=event_id).encode("ascii") + _CRLF,
                f"{EVENT_ID_HEADER}: {event_id}".encode("ascii") + _CRLF,
                b'Content-Type: text/plain; charset="utf-8"\r\n',
                b"Content-Transfer-Encoding: " + transfer_encoding + _CRLF,
                b"MIME-Version: 1.0\r\n",
                _CRLF,
                body,
            )
        )
        return Envelope(sender=self._sender, recipient=address, content=content)
