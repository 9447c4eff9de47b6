"""Mail a Mailpit received, read over its HTTP API: what the tests read under compose,
as devstack.mailsink's Maildir under the native stack (both are a ``Mailbox``)."""

import email.policy
from email.message import EmailMessage
from email.parser import BytesParser

import httpx

_PAGE = 500


class MailpitMailbox:
    def __init__(self, *, url: str) -> None:
        self._url = url.rstrip("/")

    def to(self, address: str) -> list[EmailMessage]:
        """The messages addressed to ``address``, oldest first."""
        with httpx.Client(base_url=self._url, timeout=10) as client:
            found = client.get("/api/v1/search", params={"query": f"to:{address}", "limit": _PAGE})
            found.raise_for_status()
            parser = BytesParser(_class=EmailMessage, policy=email.policy.default)
            messages = []
            for summary in reversed(found.json()["messages"]):  # Mailpit lists newest first
                raw = client.get(f"/api/v1/message/{summary['ID']}/raw")
                raw.raise_for_status()
                messages.append(parser.parsebytes(raw.content))
        return [message for message in messages if address in str(message["To"])]
