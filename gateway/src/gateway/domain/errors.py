"""Why the gateway refuses or fails a request.

GatewayError
 ├── AuthenticationFailed   no access token, or one that does not verify (401)
 ├── Forbidden              a valid caller without the role the route needs (403)
 ├── RateLimited            over the caller's limit (429)
 ├── StoreUnavailable       Redis (tickets, rate limits when they fail closed) did not answer (503)
 ├── RevocationsUnavailable user-service did not give the list of revocation marks
 ├── UpstreamFailed         the service behind the route did not answer
 │    ├── UpstreamUnavailable   connection refused or reset, breaker open (503)
 │    └── UpstreamTimeout       no answer within the route's timeout (504)
 └── ApiDocumentIncomplete  an upstream's OpenAPI document lacks a route's operation (503)
"""


class GatewayError(Exception):
    """Base of every error the gateway raises."""


class AuthenticationFailed(GatewayError):
    """No access token, or one that does not verify."""


class Forbidden(GatewayError):
    """The caller lacks the role the route needs."""


class RateLimited(GatewayError):
    """The caller is over its rate limit."""

    def __init__(self, *, headers: dict[str, str]) -> None:
        super().__init__("rate limit exceeded")
        self.headers = headers  # Retry-After and the RateLimit-* fields


class StoreUnavailable(GatewayError):
    """Redis did not answer: for tickets, or for rate limits set to fail closed."""


class RevocationsUnavailable(GatewayError):
    """user-service did not give the list of revocation marks (no answer, or not a list)."""


class UpstreamFailed(GatewayError):
    """The service behind the route did not answer."""


class UpstreamUnavailable(UpstreamFailed):
    """The upstream refused or dropped the connection, or its circuit breaker is open
    (then ``retry_after`` says for how long)."""

    def __init__(self, upstream: str, *, retry_after: float = 1.0) -> None:
        super().__init__(upstream)
        self.retry_after = retry_after


class UpstreamTimeout(UpstreamFailed):
    """The upstream did not answer within the route's timeout."""


class ApiDocumentIncomplete(GatewayError):
    """The upstreams' OpenAPI documents do not describe the route table: a route's
    operation is missing, or two services define one schema name differently."""
