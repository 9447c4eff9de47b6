"""GrpcUserDirectory: the domain's UserDirectory (domain.ports) on user-service's
GetUser, asked through interchange_common.users (one deadline, retries on
UNAVAILABLE, the breaker and the retry budget), for an order whose user's
user.created event has not arrived yet. No such user is an answer, None; when
user-service cannot be asked, UserDirectoryUnavailable, and the message goes down
the retry path."""

import uuid
from datetime import UTC

from interchange_common.errors import UserNotFound, UserServiceUnavailable
from interchange_common.users import UserServiceClient
from notification_service.adapters.errors import UserDirectoryUnavailable
from notification_service.domain.model import Recipient


class GrpcUserDirectory:
    def __init__(self, *, users: UserServiceClient) -> None:
        self._users = users

    async def lookup(self, *, user_id: uuid.UUID) -> Recipient | None:
        try:
            user = await self._users.get_user(user_id=user_id)
        except UserNotFound:
            return None
        except UserServiceUnavailable as e:
            raise UserDirectoryUnavailable(str(e)) from e
        return Recipient(
            user_id=user_id,
            email=user.email,
            name=user.name,
            deleted=False,
            # As of its last change: an older user event must not overwrite this.
            as_of=user.updated_at.ToDatetime(tzinfo=UTC),
        )
