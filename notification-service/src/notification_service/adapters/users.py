"""Recipients looked up in user-service over gRPC (``user.UserService/GetUser``), for
an order whose user's user.created event has not arrived yet.

One deadline for all attempts; only UNAVAILABLE is retried (the call was not
processed). NOT_FOUND is an answer (no such user); anything else raises
UserDirectoryUnavailable, and the message goes down the retry path.
"""

import uuid
from datetime import UTC

import grpc

from interchange_common.contracts import user_pb2, user_pb2_grpc
from interchange_common.resilience import CircuitBreaker, CircuitOpen, RetryBudget
from interchange_common.rpc import call_within
from notification_service.adapters.errors import UserDirectoryUnavailable
from notification_service.domain.model import Recipient


class GrpcUserDirectory:
    def __init__(
        self,
        *,
        channel: grpc.aio.Channel,
        breaker: CircuitBreaker | None = None,
        budget: RetryBudget | None = None,
        deadline_seconds: float = 1.0,
    ) -> None:
        self._stub = user_pb2_grpc.UserServiceStub(channel)
        self._breaker = breaker
        self._budget = budget
        self._deadline = deadline_seconds

    async def lookup(self, *, user_id: uuid.UUID) -> Recipient | None:
        try:
            user = await call_within(
                self._stub.GetUser,
                user_pb2.GetUserRequest(id=str(user_id)),
                deadline=self._deadline,
                retry_on=frozenset({grpc.StatusCode.UNAVAILABLE}),
                budget=self._budget,
                breaker=self._breaker,
            )
        except CircuitOpen as e:
            raise UserDirectoryUnavailable("user-service is failing; not asked again yet") from e
        except grpc.aio.AioRpcError as e:
            if e.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                return None
            raise UserDirectoryUnavailable(f"user-service: {e.code().name}") from e
        except TimeoutError as e:
            raise UserDirectoryUnavailable("user-service did not answer within the deadline") from e
        return Recipient(
            user_id=user_id,
            email=user.email,
            name=user.name,
            deleted=False,
            # As of its last change: an older user event must not overwrite this.
            as_of=user.updated_at.ToDatetime(tzinfo=UTC),
        )
