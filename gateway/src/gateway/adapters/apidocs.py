"""The public OpenAPI document, composed (domain.apidoc) from the upstreams' own.

Each upstream's ``/openapi.json`` is fetched through the upstream client (balancer,
breaker), the whole composed once and kept for ``ttl_seconds``: a new release of a
service shows within that time. When an upstream cannot be asked, the last composed
document is served; before there is one, the caller gets 503.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import orjson

from gateway.domain.apidoc import compose
from gateway.domain.errors import ApiDocumentIncomplete, UpstreamFailed, UpstreamUnavailable
from gateway.domain.model import Route

_log = logging.getLogger(__name__)

FetchDocument = Callable[[str], Awaitable[Mapping[str, Any]]]


class ApiDocuments:
    def __init__(
        self,
        *,
        fetch: FetchDocument,
        upstreams: Sequence[str],
        routes: Sequence[Route],
        ttl_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._upstreams = tuple(upstreams)
        self._routes = tuple(routes)
        self._ttl_seconds = ttl_seconds
        self._clock = clock
        self._lock = asyncio.Lock()
        self._document: bytes | None = None
        self._composed_at = 0.0

    async def current(self, *, own: Mapping[str, Any]) -> bytes:
        """The composed document as JSON; ``own`` is the gateway app's own document."""
        async with self._lock:
            if self._document is not None and self._clock() - self._composed_at < self._ttl_seconds:
                return self._document
            try:
                documents = await asyncio.gather(*(self._fetch(name) for name in self._upstreams))
                composed = compose(
                    routes=self._routes, upstream_documents=dict(zip(self._upstreams, documents, strict=True)), own=own
                )
            except (UpstreamFailed, ApiDocumentIncomplete) as e:
                if self._document is None:
                    raise UpstreamUnavailable(f"the API document cannot be composed: {e}") from e
                _log.warning("api document kept", extra={"error": str(e)})
                self._composed_at = self._clock()  # asked again after another ttl, not on every request
                return self._document
            self._document = orjson.dumps(composed)
            self._composed_at = self._clock()
            return self._document
