"""gRPC ``user.UserService`` on port 50051 (contract: protos/user.proto).

Callers are services (the interceptor has checked their token), so they act as
services: they may read and change every user. Domain errors map to status codes
here and nowhere else.
"""

from collections.abc import AsyncIterator
from typing import Any, NoReturn

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from interchange_common.actors import Actor
from interchange_common.contracts import user_pb2, user_pb2_grpc
from interchange_common.errors import DatabaseUnavailable
from interchange_common.rpc import Context, status_codes
from user_service.adapters.errors import UserStoreError
from user_service.domain.errors import (
    EmailTaken,
    InvalidCredentials,
    InvalidUserData,
    PermissionDenied,
    UserNotFound,
    UserServiceError,
)
from user_service.domain.model import NewUser, User, UserChanges, UserStatus, parse_user_id
from user_service.domain.usecases import Users

SERVICE_NAME = user_pb2.DESCRIPTOR.services_by_name["UserService"].full_name
DEFAULT_PAGE_SIZE = 10

_CODE_OF: dict[type[Exception], grpc.StatusCode] = {
    UserNotFound: grpc.StatusCode.NOT_FOUND,
    EmailTaken: grpc.StatusCode.ALREADY_EXISTS,
    InvalidUserData: grpc.StatusCode.INVALID_ARGUMENT,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    InvalidCredentials: grpc.StatusCode.UNAUTHENTICATED,
}
_STATUS_TO_PROTO = {
    UserStatus.ACTIVE: user_pb2.ACTIVE,
    UserStatus.INACTIVE: user_pb2.INACTIVE,
    UserStatus.SUSPENDED: user_pb2.SUSPENDED,
}
_STATUS_FROM_PROTO = {value: key for key, value in _STATUS_TO_PROTO.items()}


def _timestamp(value: Any) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def to_proto(user: User) -> user_pb2.User:
    return user_pb2.User(
        id=str(user.id),
        name=user.name,
        email=user.email,
        created_at=_timestamp(user.created_at),
        updated_at=_timestamp(user.updated_at),
        roles=list(user.roles),
        status=_STATUS_TO_PROTO[user.status],
    )


async def _abort(context: grpc.aio.ServicerContext[Any, Any], error: Exception) -> NoReturn:
    if isinstance(error, UserStoreError | DatabaseUnavailable):
        await context.abort(grpc.StatusCode.UNAVAILABLE, "the user store is unavailable")
    code = _CODE_OF.get(type(error), grpc.StatusCode.INVALID_ARGUMENT)
    detail = "user not found" if isinstance(error, UserNotFound) else str(error)
    await context.abort(code, detail)
    raise AssertionError("abort returned")  # abort always raises; this satisfies NoReturn


_status_codes = status_codes(errors=(UserServiceError, UserStoreError, DatabaseUnavailable), abort=_abort)


class UserServicer(user_pb2_grpc.UserServiceServicer):
    def __init__(self, *, users: Users) -> None:
        self._users = users
        self._actor = Actor.trusted_service()

    @_status_codes
    async def GetUser(self, request: user_pb2.GetUserRequest, context: Context) -> user_pb2.User:
        return to_proto(await self._users.get(actor=self._actor, user_id=parse_user_id(request.id)))

    @_status_codes
    async def CreateUser(self, request: user_pb2.CreateUserRequest, context: Context) -> user_pb2.User:
        new_user = NewUser(
            name=request.name,
            email=request.email,
            password=request.password if request.HasField("password") else None,
            roles=tuple(request.roles) or ("user",),
        )
        return to_proto(await self._users.register(new_user=new_user))

    @_status_codes
    async def UpdateUser(self, request: user_pb2.UpdateUserRequest, context: Context) -> user_pb2.User:
        status: UserStatus | None = None
        if request.HasField("status"):
            if request.status not in _STATUS_FROM_PROTO:
                raise InvalidUserData("status must be ACTIVE, INACTIVE or SUSPENDED")
            status = _STATUS_FROM_PROTO[request.status]
        changes = UserChanges(
            name=request.name if request.HasField("name") else None,
            email=request.email if request.HasField("email") else None,
            roles=tuple(request.roles) if request.replace_roles or request.roles else None,
            status=status,
        )
        return to_proto(await self._users.update(actor=self._actor, user_id=parse_user_id(request.id), changes=changes))

    @_status_codes
    async def DeleteUser(self, request: user_pb2.DeleteUserRequest, context: Context) -> user_pb2.DeleteUserResponse:
        await self._users.delete(actor=self._actor, user_id=parse_user_id(request.id))
        return user_pb2.DeleteUserResponse(success=True, message="user deleted")

    @_status_codes
    async def ListUsers(self, request: user_pb2.ListUsersRequest, context: Context) -> user_pb2.ListUsersResponse:
        found, total, served = await self._users.list(
            actor=self._actor,
            page=request.page or 1,
            limit=request.limit or DEFAULT_PAGE_SIZE,
            contains=request.filter,
        )
        return user_pb2.ListUsersResponse(
            users=[to_proto(user) for user in found], total=total, page=served.page, limit=served.limit
        )

    async def StreamUsers(self, request: user_pb2.StreamUsersRequest, context: Context) -> AsyncIterator[user_pb2.User]:
        try:
            async for user in self._users.stream(actor=self._actor, contains=request.filter):
                yield to_proto(user)
        except (UserServiceError, UserStoreError, DatabaseUnavailable) as e:
            await _abort(context, e)
