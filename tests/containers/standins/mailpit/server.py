"""Mailpit's SMTP port and the read side of its HTTP API, over devstack's mail sink."""

import json
import signal
import sys
import urllib.parse
import urllib.request
from email.message import EmailMessage
from email.utils import getaddresses
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from devstack.mailsink import MailSink  # the image holds this one module of devstack

MAILDIR = Path("/var/lib/mailpit")
HTTP_PORT = 8025


def _recipients(message: EmailMessage) -> list[str]:
    return [address for _, address in getaddresses([str(to) for to in message.get_all("To", [])])]


def _summary(key: str, message: EmailMessage) -> dict[str, object]:
    return {
        "ID": key,
        "MessageID": str(message.get("Message-ID", "")),
        "From": {"Name": "", "Address": str(message.get("From", ""))},
        "To": [{"Name": "", "Address": address} for address in _recipients(message)],
        "Subject": str(message.get("Subject", "")),
    }


class Api(BaseHTTPRequestHandler):
    sink: MailSink

    def do_GET(self) -> None:  # http.server's hook name
        url = urllib.parse.urlsplit(self.path)
        path = url.path
        if path in ("/readyz", "/livez"):
            self._send(200, b"ok", "text/plain")
        elif path in ("/api/v1/messages", "/api/v1/search"):
            query = urllib.parse.parse_qs(url.query).get("query", [""])[0]
            wanted = query.removeprefix("to:").strip('"').lower()
            found = [
                _summary(key, message)
                for key, message in self.sink.keyed_messages()
                if not wanted or wanted in (address.lower() for address in _recipients(message))
            ]
            found.reverse()  # newest first, as Mailpit lists them
            body = {"total": len(found), "messages_count": len(found), "messages": found}
            self._send(200, json.dumps(body).encode(), "application/json")
        elif path.startswith("/api/v1/message/") and path.endswith("/raw"):
            key = path.removeprefix("/api/v1/message/").removesuffix("/raw")
            raw = self.sink.raw(key)
            if raw is None:
                self._send(404, b"message not found", "text/plain")
            else:
                self._send(200, raw, "text/plain")
        else:
            self._send(404, b"not found", "text/plain")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002  # http.server's signature
        return


def serve() -> None:
    sink = MailSink(maildir=MAILDIR, port=1025, host="0.0.0.0")  # noqa: S104  # a container's port
    sink.start()
    Api.sink = sink
    server = ThreadingHTTPServer(("0.0.0.0", HTTP_PORT), Api)  # noqa: S104
    # PID 1 of a container: SIGTERM ends it only through a handler of its own.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(0))
    server.serve_forever()


def readyz() -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{HTTP_PORT}/readyz", timeout=2) as response:
            return 0 if response.status == 200 else 1
    except OSError:
        return 1


if __name__ == "__main__":
    if sys.argv[1:] == ["readyz"]:
        sys.exit(readyz())
    serve()
