"""GrpcUserDirectory: the domain's UserDirectory (domain.ports) on user-service's
GetUser, asked through interchange_common.users (one deadline, retries on
UNAVAILABLE, the breaker and the retry budget). An unknown user is an answer, None;
whether a user may order is the domain's rule (usecases.check_may_order)."""

import uuid

from interchange_common.contracts import user_pb2
from interchange_common.errors import UserNotFound, UserServiceUnavailable
from interchange_common.users import UserServiceClient
from order_service.domain.errors import UserCheckUnavailable
from order_service.domain.ports import UserStatus

_STATUS_OF = {
    user_pb2.ACTIVE: UserStatus.ACTIVE,
    user_pb2.INACTIVE: UserStatus.INACTIVE,
    user_pb2.SUSPENDED: UserStatus.SUSPENDED,
}


class GrpcUserDirectory:
    def __init__(self, *, users: UserServiceClient) -> None:
        self._users = users

    async def status(self, *, user_id: uuid.UUID) -> UserStatus | None:
        try:
            user = await self._users.get_user(user_id=user_id)
        except UserNotFound:
            return None
        except UserServiceUnavailable as e:
            raise UserCheckUnavailable(str(e)) from e
        return _STATUS_OF.get(user.status, UserStatus.UNKNOWN)
