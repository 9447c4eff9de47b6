"""The stores on PostgreSQL, through SQLAlchemy Core with asyncpg.

SqlNotificationStore   one transaction per message (SqlInbox), and the users' lists
SqlDeadLetterStore     dead letters: add (idempotent), list, take under a row lock, delete
"""

import contextlib
import functools
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from types import TracebackType
from typing import Any

from sqlalchemy import BindParameter, Insert, Select, Table, Text, bindparam, delete, func, literal, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from interchange_common import tracing
from interchange_common.database import database_unavailable, is_unavailable
from notification_service.adapters.errors import NotificationStoreError
from notification_service.adapters.orm import (
    dead_letters,
    mail_outbox,
    notifications,
    orders,
    processed_messages,
    recipients,
)
from notification_service.domain.errors import DeadLetterNotFound
from notification_service.domain.model import (
    DeadLetter,
    KnownOrder,
    Mail,
    Notification,
    OrderItem,
    Page,
    Recipient,
)

MAIL_CHANNEL = "mail_outbox"  # NOTIFY'd when a mail is queued: wakes the dispatchers
LIVE_CHANNEL = "live_outbox"  # NOTIFY'd when a notification is added: wakes the live pushers


class _StoreErrors:
    """Translate driver errors at the adapter boundary into DatabaseUnavailable when the
    database cannot serve the work now, else NotificationStoreError (the cause kept):
    the consumer retries both, and the HTTP API answers both with 503."""

    def __init__(self, action: str) -> None:
        self._action = action

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if error is not None and is_unavailable(error):
            raise database_unavailable(action=self._action, error=error) from error
        if isinstance(error, SQLAlchemyError):
            raise NotificationStoreError(f"could not {self._action}") from error


def _row_to_notification(row: Any) -> Notification:
    return Notification(
        id=row.id,
        user_id=row.user_id,
        type=row.type,
        title=row.title,
        body=row.body,
        data=dict(row.data),
        event_id=row.event_id,
        created_at=row.created_at,
    )


def _row_to_dead_letter(row: Any) -> DeadLetter:
    return DeadLetter(
        id=row.id,
        message_id=row.message_id,
        routing_key=row.routing_key,
        body=bytes(row.body),
        headers=dict(row.headers),
        correlation_id=row.correlation_id,
        error=row.error,
        attempts=row.attempts,
        failed_at=tuple(row.failed_at),
        dead_at=row.dead_at,
        stored_at=row.stored_at,
    )


def _values(table: Table, *, prefix: str, but: tuple[str, ...] = ()) -> dict[str, BindParameter[Any]]:
    """A bound parameter for each column of the table (``<prefix><column>``), for VALUES."""
    return {column.name: bindparam(f"{prefix}{column.name}") for column in table.columns if column.name not in but}


# The inbox's statements, built once: each execution only binds its values (SQLAlchemy
# caches their compiled form; building them anew for each message cost more than that).
_MARK_HANDLED = (
    insert(processed_messages)
    .values(_values(processed_messages, prefix="", but=("processed_at",)))
    .on_conflict_do_nothing(index_elements=["message_id"])
    .returning(processed_messages.c.message_id)
)
_RECIPIENT = select(recipients).where(recipients.c.user_id == bindparam("user_id")).with_for_update()
_ORDER = select(orders).where(orders.c.order_id == bindparam("order_id"))

_upsert_recipient = insert(recipients).values(_values(recipients, prefix="recipient_"))
# The writes an inbox holds until its commit, by kind; their parameters are named
# "<kind>_<column>".
_WRITES: dict[str, Insert] = {
    # The domain decided under the row lock; the guard repeats "older never wins" for
    # the one case a lock cannot cover: two first events for a user at once.
    "recipient": _upsert_recipient.on_conflict_do_update(
        index_elements=["user_id"],
        set_={name: _upsert_recipient.excluded[name] for name in ("email", "name", "deleted", "as_of")},
        where=recipients.c.as_of <= _upsert_recipient.excluded.as_of,
    ),
    "order": insert(orders)
    .values(_values(orders, prefix="order_"))
    .on_conflict_do_nothing(index_elements=["order_id"]),
    # Its pushed_at stays NULL until the live pusher has put it in Redis (the live outbox).
    "notification": insert(notifications)
    .values(_values(notifications, prefix="notification_", but=("pushed_at",)))
    .on_conflict_do_nothing(index_elements=["event_id"]),
    "mail": insert(mail_outbox)
    .values(
        _values(
            mail_outbox,
            prefix="mail_",
            but=("seq", "attempts", "last_error", "sent_at", "given_up_at", "next_attempt_at"),
        )
    )
    .on_conflict_do_nothing(index_elements=["event_id"]),
}
# A NOTIFY, delivered at commit (and only if the transaction commits), wakes the
# workers of the outbox a write adds to; it names this instance (adapters.listening).
_WAKES = {"notification": LIVE_CHANNEL, "mail": MAIL_CHANNEL}


@functools.cache
def _writes_statement(kinds: tuple[str, ...]) -> Select[Any]:
    """The writes of ``kinds`` and their NOTIFYs as one statement (data-modifying WITH
    queries all run, read or not): one round trip."""
    wakes = [func.pg_notify(_WAKES[kind], bindparam("instance", type_=Text)) for kind in kinds if kind in _WAKES]
    statement = select(*wakes) if wakes else select(literal(1))
    for kind in kinds:
        statement = statement.add_cte(_WRITES[kind].cte(f"{kind}_written"))
    return statement


class SqlInbox:
    """One message's transaction (see domain.ports.Inbox). Reads go at once; the writes,
    which nothing in the transaction reads back, wait for its end and go together in
    one statement just before the commit (``write``): two or three round trips fewer
    for each message."""

    def __init__(self, conn: AsyncConnection, *, instance: str) -> None:
        self._conn = conn
        self._instance = instance
        self._held: dict[str, dict[str, Any]] = {}

    async def mark_handled(self, *, message_id: str, routing_key: str) -> bool:
        # A concurrent handler of the same id waits here on the unique index until the
        # first commits, then finds it taken: one effect, whoever is first.
        inserted = await self._conn.execute(_MARK_HANDLED, {"message_id": message_id, "routing_key": routing_key})
        return inserted.first() is not None

    async def recipient(self, *, user_id: uuid.UUID) -> Recipient | None:
        row = (await self._conn.execute(_RECIPIENT, {"user_id": user_id})).first()
        if row is None:
            return None
        return Recipient(user_id=row.user_id, email=row.email, name=row.name, deleted=row.deleted, as_of=row.as_of)

    async def save_recipient(self, *, recipient: Recipient) -> None:
        await self._hold(
            "recipient",
            user_id=recipient.user_id,
            email=recipient.email,
            name=recipient.name,
            deleted=recipient.deleted,
            as_of=recipient.as_of,
        )

    async def order(self, *, order_id: uuid.UUID) -> KnownOrder | None:
        row = (await self._conn.execute(_ORDER, {"order_id": order_id})).first()
        if row is None:
            return None
        return KnownOrder(
            order_id=row.order_id,
            user_id=row.user_id,
            items=tuple(
                OrderItem(sku=item["sku"], quantity=int(item["quantity"]), unit_price=Decimal(item["unit_price"]))
                for item in row.items
            ),
            total=Decimal(row.total),
            currency=row.currency,
        )

    async def save_order(self, *, order: KnownOrder) -> None:
        await self._hold(
            "order",
            order_id=order.order_id,
            user_id=order.user_id,
            items=[
                {"sku": item.sku, "quantity": item.quantity, "unit_price": str(item.unit_price)} for item in order.items
            ],
            total=order.total,
            currency=order.currency,
        )

    async def add_notification(self, *, notification: Notification) -> None:
        await self._hold(
            "notification",
            id=notification.id,
            user_id=notification.user_id,
            type=notification.type,
            title=notification.title,
            body=notification.body,
            data=notification.data,
            event_id=notification.event_id,
            created_at=notification.created_at,
            traceparent=tracing.current_traceparent(),
        )

    async def queue_mail(self, *, mail: Mail) -> None:
        await self._hold(
            "mail",
            id=mail.id,
            event_id=mail.event_id,
            to_address=mail.to_address,
            to_name=mail.to_name,
            subject=mail.subject,
            body=mail.body,
            created_at=mail.created_at,
            traceparent=tracing.current_traceparent(),
        )

    async def write(self) -> None:
        """Send the writes held so far."""
        if not self._held:
            return
        kinds = tuple(kind for kind in _WRITES if kind in self._held)
        parameters: dict[str, Any] = {"instance": self._instance}
        for kind in kinds:
            parameters.update({f"{kind}_{name}": value for name, value in self._held[kind].items()})
        self._held.clear()
        await self._conn.execute(_writes_statement(kinds), parameters)

    async def _hold(self, kind: str, **values: Any) -> None:
        if kind in self._held:  # one of each kind a statement: the earlier goes first
            await self.write()
        self._held[kind] = values


class SqlNotificationStore:
    def __init__(self, *, engine: AsyncEngine, instance: str = "") -> None:
        self._engine = engine
        self._instance = instance  # named by the NOTIFYs of its commits (adapters.listening)
        # Single-statement reads need no transaction: autocommit saves the BEGIN and ROLLBACK.
        self._reads = engine.execution_options(isolation_level="AUTOCOMMIT")

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqlInbox]:
        with _StoreErrors("store the message's effect"):
            async with self._engine.begin() as conn:
                inbox = SqlInbox(conn, instance=self._instance)
                yield inbox
                await inbox.write()

    async def list_for_user(self, *, user_id: uuid.UUID, page: Page) -> tuple[list[Notification], int]:
        query = (
            select(notifications)
            .where(notifications.c.user_id == user_id)
            .order_by(notifications.c.created_at.desc(), notifications.c.id.desc())
            .limit(page.limit)
            .offset(page.offset)
        )
        count = select(func.count()).select_from(notifications).where(notifications.c.user_id == user_id)
        with _StoreErrors("list notifications"):
            async with self._engine.connect() as conn:
                rows = (await conn.execute(query)).all()
                total = (await conn.execute(count)).scalar_one()
        return [_row_to_notification(row) for row in rows], int(total)

    async def purge(self, *, older_than: timedelta) -> int:
        """Forget message ids handled, and mails sent or given up, longer ago than
        ``older_than``: a redelivery comes within minutes, not days."""
        cutoff = func.now() - older_than
        with _StoreErrors("purge old rows"):
            async with self._engine.begin() as conn:
                handled = await conn.execute(
                    delete(processed_messages).where(processed_messages.c.processed_at < cutoff)
                )
                mailed = await conn.execute(
                    delete(mail_outbox).where(func.coalesce(mail_outbox.c.sent_at, mail_outbox.c.given_up_at) < cutoff)
                )
        return int(handled.rowcount or 0) + int(mailed.rowcount or 0)


class SqlDeadLetterStore:
    def __init__(self, *, engine: AsyncEngine) -> None:
        self._engine = engine

    async def add(self, *, dead_letter: DeadLetter) -> None:
        with _StoreErrors("store the dead letter"):
            async with self._engine.begin() as conn:
                await conn.execute(
                    insert(dead_letters)
                    .values(
                        id=dead_letter.id,
                        message_id=dead_letter.message_id,
                        routing_key=dead_letter.routing_key,
                        body=dead_letter.body,
                        headers=dead_letter.headers,
                        correlation_id=dead_letter.correlation_id,
                        error=dead_letter.error,
                        attempts=dead_letter.attempts,
                        failed_at=list(dead_letter.failed_at),
                        dead_at=dead_letter.dead_at,
                        stored_at=dead_letter.stored_at,
                    )
                    .on_conflict_do_nothing(constraint="dead_letters_message_dead_at_key")
                )

    async def list(self, *, page: Page) -> tuple[list[DeadLetter], int]:
        query = (
            select(dead_letters)
            .order_by(dead_letters.c.dead_at.desc(), dead_letters.c.id.desc())
            .limit(page.limit)
            .offset(page.offset)
        )
        with _StoreErrors("list dead letters"):
            async with self._engine.connect() as conn:
                rows = (await conn.execute(query)).all()
                total = (await conn.execute(select(func.count()).select_from(dead_letters))).scalar_one()
        return [_row_to_dead_letter(row) for row in rows], int(total)

    @contextlib.asynccontextmanager
    async def take(self, *, dead_letter_id: uuid.UUID) -> AsyncIterator[DeadLetter]:
        with _StoreErrors("take the dead letter"):
            async with self._engine.begin() as conn:
                row = (
                    await conn.execute(
                        select(dead_letters).where(dead_letters.c.id == dead_letter_id).with_for_update()
                    )
                ).first()
                if row is None:
                    raise DeadLetterNotFound(str(dead_letter_id))
                yield _row_to_dead_letter(row)
                await conn.execute(delete(dead_letters).where(dead_letters.c.id == dead_letter_id))

    async def delete(self, *, dead_letter_id: uuid.UUID) -> None:
        with _StoreErrors("delete the dead letter"):
            async with self._engine.begin() as conn:
                result = await conn.execute(delete(dead_letters).where(dead_letters.c.id == dead_letter_id))
        if result.rowcount == 0:
            raise DeadLetterNotFound(str(dead_letter_id))
