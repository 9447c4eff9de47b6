"""May this user order? Asked of user-service over gRPC (``user.UserService/GetUser``).

The check has one deadline for all its attempts, shortened by the deadline of the
request being served. Only UNAVAILABLE is retried, because then the call was not
processed; the retries use capped backoff with full jitter within the retry budget
(interchange_common.rpc.call_within) and stop at the deadline. A circuit breaker
around the whole check fails fast while user-service keeps failing, and lets a
limited number of probes through after its cool-down. An unknown or inactive user is
an answer, not a failure: it never opens the breaker.
"""

import uuid

import grpc

from interchange_common.contracts import user_pb2, user_pb2_grpc
from interchange_common.resilience import CircuitBreaker, CircuitOpen, RetryBudget
from interchange_common.rpc import call_within
from order_service.domain.errors import OrderError


class UserCheckUnavailable(OrderError):
    """user-service did not answer, or its breaker is open (503)."""


class UserMayNotOrder(OrderError):
    """The user is unknown or not active (422)."""


class UserDirectory:
    def __init__(
        self,
        *,
        channel: grpc.aio.Channel,
        breaker: CircuitBreaker,
        budget: RetryBudget | None = None,
        deadline_seconds: float = 1.0,
        attempts: int = 3,
    ) -> None:
        self._stub = user_pb2_grpc.UserServiceStub(channel)
        self._deadline = deadline_seconds
        self._attempts = attempts
        self._budget = budget
        self.breaker = breaker

    async def ensure_may_order(self, *, user_id: uuid.UUID) -> None:
        try:
            user = await call_within(
                self._stub.GetUser,
                user_pb2.GetUserRequest(id=str(user_id)),
                deadline=self._deadline,
                retry_on=frozenset({grpc.StatusCode.UNAVAILABLE}),
                attempts=self._attempts,
                budget=self._budget,
                breaker=self.breaker,
            )
        except CircuitOpen as e:
            raise UserCheckUnavailable("user-service is failing; not asked again yet") from e
        except grpc.aio.AioRpcError as e:
            if e.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                raise UserMayNotOrder("unknown user") from e
            raise UserCheckUnavailable(f"user-service: {e.code().name}") from e
        except TimeoutError as e:
            raise UserCheckUnavailable("user-service did not answer within the deadline") from e
        if user.status != user_pb2.ACTIVE:
            raise UserMayNotOrder("only active users may order")
