"""May this user order? Asked of user-service over gRPC (``user.UserService/GetUser``).

The check has one deadline for all its attempts. Only UNAVAILABLE is retried,
because then the call was not processed; the retries use capped, jittered backoff
(interchange_common.rpc.call_within, on stamina) and stop at the deadline. A
circuit breaker (purgatory) around the whole check fails fast
while user-service keeps failing, and lets a probe through after ``open_seconds``.
An unknown or inactive user is an answer, not a failure: it never opens the breaker.
"""

import uuid

import grpc
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState

from interchange_common.contracts import user_pb2, user_pb2_grpc
from interchange_common.rpc import call_within
from order_service.domain.errors import OrderError

BREAKER = "user-service"


class UserCheckUnavailable(OrderError):
    """user-service did not answer, or its breaker is open (503)."""


class UserMayNotOrder(OrderError):
    """The user is unknown or not active (422)."""


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
        except TimeoutError as e:
            raise UserCheckUnavailable("user-service did not answer within the deadline") from e
        if user.status != user_pb2.ACTIVE:
            raise UserMayNotOrder("only active users may order")

    async def _get(self, user_id: uuid.UUID) -> user_pb2.User:
        return await call_within(
            self._stub.GetUser,
            user_pb2.GetUserRequest(id=str(user_id)),
            deadline=self._deadline,
            retry_on=frozenset({grpc.StatusCode.UNAVAILABLE}),
            attempts=self._attempts,
        )
