"""What the REST proxy (http.py) and the live pass-through (passthrough.py) share: who
calls, and how an upstream's answer or failure reaches the caller.

Verify, Hit, Check the access-token check, the rate-limit count, and a signed-in caller's
                   revocation check and count in one (one round trip), the app is given
client_key         the key a caller is counted by before it is known: its address
CallerGate         who calls, by ticket or access token, and whether within their limit
answer_headers     an upstream answer's headers, plus the gateway's RateLimit-* fields
upstream_failure   the problem answer when the upstream did not answer: 503 or 504
"""

import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from gateway.domain.errors import (
    AuthenticationFailed,
    RateLimited,
    UpstreamFailed,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.domain.model import Principal, RateDecision, RateLimitPolicy, Standing
from interchange_common.problems import problem_response

Verify = Callable[..., Awaitable[Principal]]
Hit = Callable[..., Awaitable[RateDecision]]
# check(principal=, policy=, key=, ip_policy=, client=): is the token revoked, and the
# call counted (against the client's address when it is); see Standing.
Check = Callable[..., Awaitable[Standing]]


def client_key(request: Request | WebSocket) -> str:
    """The peer's socket address: X-Forwarded-For is the caller's to invent."""
    return f"ip:{request.client.host if request.client else 'unknown'}"


@dataclass(frozen=True, slots=True)
class Admission:
    principal: Principal
    decision: RateDecision


@dataclass(frozen=True, slots=True)
class CallerGate:
    """Who calls, by ticket or access token, and whether they are within their limit.
    A failed attempt (a revoked token too) counts against the client's address:
    guessing tickets costs. A token's revocation mark is read with the count (``check``,
    one round trip); a ticket's caller is counted alone (the ticket was issued to a
    checked token, and the upstream ends the connection when that token is revoked)."""

    verify: Verify
    redeem: Callable[..., Awaitable[Principal]]
    hit: Hit
    check: Check
    policy: RateLimitPolicy
    ip_policy: RateLimitPolicy

    async def admit(self, *, authorization: str | None, ticket: str | None, client: str) -> Admission:
        try:
            if ticket is not None:
                principal = await self.redeem(ticket=ticket)
            else:
                principal = await self.verify(header=authorization)
        except AuthenticationFailed:
            refused = await self.hit(policy=self.ip_policy, key=client)
            if not refused.allowed:
                raise RateLimited(headers=refused.headers()) from None
            raise
        key = f"user:{principal.user_id}"
        if ticket is not None:
            decision = await self.hit(policy=self.policy, key=key)
        else:
            standing = await self.check(
                principal=principal, policy=self.policy, key=key, ip_policy=self.ip_policy, client=client
            )
            if standing.revoked:
                if standing.decision is not None and not standing.decision.allowed:
                    raise RateLimited(headers=standing.decision.headers())
                raise AuthenticationFailed("token revoked")
            assert standing.decision is not None  # counted: a policy was given
            decision = standing.decision
        if not decision.allowed:
            raise RateLimited(headers=decision.headers())
        return Admission(principal=principal, decision=decision)


def answer_headers(*, upstream: Mapping[str, str], limit: Mapping[str, str]) -> dict[str, str]:
    """An upstream answer's headers plus the gateway's RateLimit-* fields, unless the
    upstream sent RateLimit-* of its own: then they describe the limit that answered
    (notification-service's stream cap on its 429), not the request limit the
    gateway counted the call against, and they pass as they are."""
    if any(name.lower().startswith("ratelimit-") for name in upstream):
        return dict(upstream)
    return {**upstream, **limit}


def upstream_failure(error: UpstreamFailed, *, audience: str, headers: dict[str, str]) -> Response:
    """504 when the upstream did not answer in time; otherwise 503 with Retry-After
    (how long its circuit breaker stays open, or a second)."""
    if isinstance(error, UpstreamTimeout):
        return problem_response(status=504, detail=f"{audience} did not answer in time", headers=headers)
    retry_after = error.retry_after if isinstance(error, UpstreamUnavailable) else 1.0
    return problem_response(
        status=503,
        detail=f"{audience} is unavailable",
        headers={**headers, "Retry-After": str(max(1, math.ceil(retry_after)))},
    )
