"""What several layers read of a request and its answer.

header       one request header's value (the last, when sent twice)
StartNoted   the layer's ``send``, noting whether the answer has started: after
             that, a layer that meets an error can no longer answer with a problem
"""

from collections.abc import Awaitable

from starlette.types import Message, Scope, Send


def header(scope: Scope, name: bytes) -> str | None:
    """The value of the request header ``name`` (lower case, as ASGI gives names)."""
    found: str | None = None
    for key, value in scope["headers"]:
        if key == name:
            found = value.decode("latin-1")
    return found


class StartNoted:
    """``send``, noting in ``started`` when the answer's start goes out. A plain callable
    returning the outer ``send``'s awaitable: no coroutine of its own per message."""

    __slots__ = ("_send", "started")

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False

    def __call__(self, message: Message) -> Awaitable[None]:
        if message["type"] == "http.response.start":
            self.started = True
        return self._send(message)
