"""May this user order? Asked of user-service over gRPC (``user.UserService/GetUser``).

Each call has a deadline. Only UNAVAILABLE is retried, because then the call was
not processed; the retries use capped, jittered backoff (stamina) and stop at the
caller's deadline. A circuit breaker (purgatory) around the whole check fails fast
while user-service keeps failing, and lets a probe through after ``open_seconds``.
An unknown or inactive user is an answer, not a failure: it never opens the breaker.
"""

import uuid

import grpc
import stamina
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState

from interchange_common.contracts import user_pb2, user_pb2_grpc
from order_service.domain.errors import OrderError

BREAKER = "user-service"


class UserCheckUnavailable(OrderError):
    """user-service did not answer, or its breaker is open (503)."""


class UserMayNotOrder(OrderError):
    """The user is unknown or not active (422)."""


def _not_processed(error: Exception) -> bool:
    return isinstance(error, grpc.aio.AioRpcError) and error.code() == grpc.StatusCode.UNAVAILABLE


def _an_answer(error: BaseException) -> bool:
    """Errors that are user-service's answer, not its failure."""
    return isinstance(error, grpc.aio.AioRpcError) and error.code() in (
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
    )


class UserDirectory:
    def __init__(
        self,
        *,
        channel: grpc.aio.Channel,
        deadline_seconds: float = 1.0,
        failures_to_open: int = 5,
        open_seconds: float = 10.0,
        attempts: int = 3,
    ) -> None:
        self._stub = user_pb2_grpc.UserServiceStub(channel)
        self._deadline = deadline_seconds
        self._attempts = attempts
        self.breakers = AsyncCircuitBreakerFactory(
            default_threshold=failures_to_open,
            default_ttl=open_seconds,
            exclude=[(grpc.aio.AioRpcError, _an_answer)],
        )

    async def ensure_may_order(self, *, user_id: uuid.UUID) -> None:
        try:
            async with await self.breakers.get_breaker(BREAKER):
                user = await self._get(user_id)
        except OpenedState as e:
            raise UserCheckUnavailable("user-service is failing; not asked again yet") from e
        except grpc.aio.AioRpcError as e:
            if _an_answer(e):
                raise UserMayNotOrder("unknown user") from e
            raise UserCheckUnavailable(f"user-service: {e.code().name}") from e
        if user.status != user_pb2.ACTIVE:
            raise UserMayNotOrder("only active users may order")

    async def _get(self, user_id: uuid.UUID) -> user_pb2.User:
        request = user_pb2.GetUserRequest(id=str(user_id))
        async for attempt in stamina.retry_context(
            on=_not_processed,
            attempts=self._attempts,
            timeout=self._deadline * self._attempts,
            wait_initial=0.05,
            wait_max=0.5,
            wait_jitter=0.05,
        ):
            with attempt:
                return await self._stub.GetUser(request, timeout=self._deadline)
        raise AssertionError("stamina retries or raises")
