"""user-service's ``user.UserService/GetUser``, asked the same way by every service.

    UserServiceClient.get_user()   the user as user-service has it now, or
     ├── UserNotFound              no such user (NOT_FOUND, or INVALID_ARGUMENT: an
     │                             id it cannot hold): an answer, so the breaker
     │                             counts it as a success
     └── UserServiceUnavailable    the breaker is open, another status, or no answer
                                   within the deadline (errors.py)

One deadline for all attempts, shortened by the deadline of the request being
served. Only UNAVAILABLE is retried, because then the call was not processed; the
retries use capped backoff with full jitter within the retry budget
(rpc.call_within) and stop at the deadline. A circuit breaker around the whole call
fails fast while user-service keeps failing, and lets a limited number of probes
through after its cool-down. What a user means to a service (may they order? where
does their mail go?) is that service's adapter's and domain's business.
"""

import uuid

import grpc

from interchange_common.contracts import user_pb2, user_pb2_grpc
from interchange_common.errors import UserNotFound, UserServiceUnavailable
from interchange_common.resilience import CircuitBreaker, CircuitOpen, RetryBudget
from interchange_common.rpc import call_within

_RETRIED = frozenset({grpc.StatusCode.UNAVAILABLE})
_NOT_FOUND = frozenset({grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT})


class UserServiceClient:
    def __init__(
        self,
        *,
        channel: grpc.aio.Channel,
        breaker: CircuitBreaker | None = None,
        budget: RetryBudget | None = None,
        deadline_seconds: float = 1.0,
        attempts: int = 3,
    ) -> None:
        self._stub = user_pb2_grpc.UserServiceStub(channel)
        self._breaker = breaker
        self._budget = budget
        self._deadline = deadline_seconds
        self._attempts = attempts

    async def get_user(self, *, user_id: uuid.UUID) -> user_pb2.User:
        try:
            return await call_within(
                self._stub.GetUser,
                user_pb2.GetUserRequest(id=str(user_id)),
                deadline=self._deadline,
                retry_on=_RETRIED,
                attempts=self._attempts,
                budget=self._budget,
                breaker=self._breaker,
            )
        except CircuitOpen as e:
            raise UserServiceUnavailable("user-service is failing; not asked again yet") from e
        except grpc.aio.AioRpcError as e:
            if e.code() in _NOT_FOUND:
                raise UserNotFound(f"no user {user_id}") from e
            raise UserServiceUnavailable(f"user-service: {e.code().name}") from e
        except TimeoutError as e:
            raise UserServiceUnavailable("user-service did not answer within the deadline") from e
