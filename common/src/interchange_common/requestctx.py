"""The request id of the work in progress, carried in a context variable.

Set once at the edge of a request (HTTP middleware, gRPC interceptor), read by the
log formatter and by every client that forwards the id to the next service.
"""

import re
import uuid
from contextvars import ContextVar

REQUEST_ID_HEADER = "x-request-id"

# Ids from callers are echoed into headers and logs: accept only short, plain tokens.
_ACCEPTABLE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")  # fullmatch: no trailing newline

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")


def new_request_id() -> str:
    return uuid.uuid4().hex


def accept_request_id(*, offered: str | None) -> str:
    """The caller's id when it is acceptable, else a fresh one."""
    if offered and _ACCEPTABLE.fullmatch(offered):
        return offered
    return new_request_id()


def current_request_id() -> str:
    """The id for logs: "-" outside any request."""
    return request_id_var.get()


def outgoing_request_id() -> str:
    """The id to forward to the next service: the current one, or a new one for work
    that no request started (start-up, background jobs)."""
    current = request_id_var.get()
    return current if current != "-" else new_request_id()
