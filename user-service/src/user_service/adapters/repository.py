"""UserRepository on PostgreSQL, through SQLAlchemy Core with asyncpg."""

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from types import TracebackType
from typing import Any

from sqlalchemy import ColumnElement, delete, func, insert, or_, select, true, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from interchange_common.database import database_unavailable, is_unavailable
from interchange_common.outbox import enqueue
from user_service.adapters.errors import UserStoreError
from user_service.adapters.orm import revocation_marks, users
from user_service.domain.errors import EmailTaken, InvalidUserData, UserNotFound
from user_service.domain.events import REVOCATION_LIFETIME, Change, TokenRevocation, UserEvent, revocation_of
from user_service.domain.model import Page, User, UserStatus

_STREAM_BATCH = 200


def _row_to_user(row: Any) -> User:
    return User(
        id=row.id,
        name=row.name,
        email=row.email,
        password_hash=row.password_hash,
        roles=tuple(row.roles),
        status=UserStatus(row.status),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _user_to_row(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "name": user.name,
        "email": user.email,
        "password_hash": user.password_hash,
        "roles": list(user.roles),
        "status": user.status.value,
        "created_at": user.created_at,
        "updated_at": user.updated_at,
    }


def _contains(text: str) -> ColumnElement[bool]:
    if not text:
        return true()
    # autoescape: % and _ in the text match themselves, not any characters.
    return or_(users.c.name.icontains(text, autoescape=True), users.c.email.icontains(text, autoescape=True))


class _StoreErrors:
    """Translate driver errors at the adapter boundary: a taken email becomes
    EmailTaken, a database that cannot serve the work now DatabaseUnavailable, any
    other database failure UserStoreError (the cause kept); the entry points answer
    both of those with 503 / UNAVAILABLE."""

    def __init__(self, action: str) -> None:
        self._action = action

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if isinstance(error, IntegrityError) and "users_email_key" in str(error.orig):
            raise EmailTaken("email already in use") from error
        if isinstance(error, DataError):  # SQLSTATE class 22: the value itself is unusable
            raise InvalidUserData("a value cannot be stored") from error
        if error is not None and is_unavailable(error):
            raise database_unavailable(action=self._action, error=error) from error
        if isinstance(error, SQLAlchemyError):
            raise UserStoreError(f"could not {self._action}") from error


class SqlUserRepository:
    """Every change is stored with the event the domain gives it, which goes to the
    outbox in the same transaction (the relay publishes it from there), and with the
    revocation mark the event's change leaves (events.revocation_of)."""

    def __init__(self, *, engine: AsyncEngine, events_exchange: str) -> None:
        self._engine = engine
        self._exchange = events_exchange
        # Single-statement reads need no transaction: autocommit saves the BEGIN and
        # ROLLBACK round trips around each of them. Same pool, other execution options.
        self._reads = engine.execution_options(isolation_level="AUTOCOMMIT")

    async def add(self, *, user: User, event: UserEvent) -> None:
        with _StoreErrors("store the user"):
            async with self._engine.begin() as conn:
                await conn.execute(insert(users).values(**_user_to_row(user)))
                await self._publish(conn, event)

    async def get(self, *, user_id: uuid.UUID) -> User:
        with _StoreErrors("read the user"):
            async with self._reads.connect() as conn:
                row = (await conn.execute(select(users).where(users.c.id == user_id))).first()
        if row is None:
            raise UserNotFound(str(user_id))
        return _row_to_user(row)

    async def get_by_email(self, *, email: str) -> User | None:
        with _StoreErrors("read the user"):
            async with self._reads.connect() as conn:
                row = (await conn.execute(select(users).where(users.c.email == email))).first()
        return None if row is None else _row_to_user(row)

    async def update(self, *, user_id: uuid.UUID, change: Callable[[User], Change | None]) -> User:
        with _StoreErrors("update the user"):
            async with self._engine.begin() as conn:
                row = (await conn.execute(select(users).where(users.c.id == user_id).with_for_update())).first()
                if row is None:
                    raise UserNotFound(str(user_id))
                current = _row_to_user(row)
                changed = change(current)
                if changed is None:
                    return current
                await conn.execute(update(users).where(users.c.id == user_id).values(**_user_to_row(changed.user)))
                await self._publish(conn, changed.event)
        return changed.user

    async def delete(self, *, user_id: uuid.UUID, event: UserEvent) -> None:
        with _StoreErrors("delete the user"):
            async with self._engine.begin() as conn:
                result = await conn.execute(delete(users).where(users.c.id == user_id))
                if result.rowcount == 0:
                    raise UserNotFound(str(user_id))
                await self._publish(conn, event)

    async def _publish(self, conn: AsyncConnection, event: UserEvent) -> None:
        await enqueue(
            conn, exchange=self._exchange, routing_key=event.type, message_id=event.id, body=event.as_message()
        )
        mark = revocation_of(event)
        if mark is not None:
            await self._revoke(conn, mark)

    async def _revoke(self, conn: AsyncConnection, mark: TokenRevocation) -> None:
        """The user's mark, the later one kept; and the marks that refuse nothing any
        more go (revocations are rare: this costs one indexed delete each). The prune
        skips rows another transaction holds: two of them pruning and marking each
        other's rows would otherwise wait for each other (a deadlock); what one skips,
        a later one prunes."""
        upsert = pg_insert(revocation_marks).values(user_id=mark.user_id, revoked_at=mark.revoked_at)
        await conn.execute(
            upsert.on_conflict_do_update(
                index_elements=[revocation_marks.c.user_id],
                set_={"revoked_at": func.greatest(revocation_marks.c.revoked_at, upsert.excluded.revoked_at)},
            )
        )
        expired = (
            select(revocation_marks.c.user_id)
            .where(revocation_marks.c.revoked_at < mark.revoked_at - REVOCATION_LIFETIME)
            .with_for_update(skip_locked=True)
        )
        await conn.execute(delete(revocation_marks).where(revocation_marks.c.user_id.in_(expired)))

    async def revocations(self, *, since: datetime) -> list[TokenRevocation]:
        query = select(revocation_marks.c.user_id, revocation_marks.c.revoked_at).where(
            revocation_marks.c.revoked_at >= since
        )
        with _StoreErrors("read the revocations"):
            async with self._reads.connect() as conn:
                rows = (await conn.execute(query)).all()
        return [TokenRevocation(user_id=row.user_id, revoked_at=row.revoked_at) for row in rows]

    async def list(self, *, page: Page, contains: str) -> tuple[list[User], int]:
        condition = _contains(contains)
        query = (
            select(users)
            .where(condition)
            .order_by(users.c.created_at, users.c.id)
            .limit(page.limit)
            .offset(page.offset)
        )
        with _StoreErrors("list users"):
            async with self._engine.connect() as conn:
                rows = (await conn.execute(query)).all()
                total = (await conn.execute(select(func.count()).select_from(users).where(condition))).scalar_one()
        return [_row_to_user(row) for row in rows], int(total)

    async def stream(self, *, contains: str) -> AsyncIterator[User]:
        """Keyset pages, each its own short read: a slow consumer holds no connection
        and no transaction between pages, and memory stays at one page."""
        condition = _contains(contains)
        after: tuple[datetime, uuid.UUID] | None = None
        while True:
            query = select(users).where(condition)
            if after is not None:
                query = query.where(tuple_(users.c.created_at, users.c.id) > tuple_(*after))
            query = query.order_by(users.c.created_at, users.c.id).limit(_STREAM_BATCH)
            with _StoreErrors("stream users"):
                async with self._reads.connect() as conn:
                    rows = (await conn.execute(query)).all()
            for row in rows:
                yield _row_to_user(row)
            if len(rows) < _STREAM_BATCH:
                return
            after = (rows[-1].created_at, rows[-1].id)
