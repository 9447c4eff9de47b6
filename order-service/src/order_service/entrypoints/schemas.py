"""The HTTP shapes of orders and of the projection's parked events (docs/api.md):
what comes in, what goes out."""

import re
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from interchange_common.events import RecordedEvent
from interchange_common.projections import ParkedEvent
from order_service.domain.order import MAX_ITEMS, MAX_REASON_LENGTH, MAX_UNIT_PRICE, Item, Order

StatusName = Literal["PLACED", "CONFIRMED", "SHIPPED", "CANCELLED"]


# A price as a string: 0 to 1000000, at most two decimal places, no sign or exponent.
PRICE_PATTERN = r"^(?:(?:0|[1-9][0-9]{0,5})(?:\.[0-9]{1,2})?|1000000(?:\.0{1,2})?)$"


def _plain_price(value: object) -> object:
    """Only what the document says passes: a bool is not a number, and a string must
    be a plain decimal ("12.50"), not anything Decimal() would parse ("1e3", " 5")."""
    if isinstance(value, bool) or (isinstance(value, str) and not re.fullmatch(PRICE_PATTERN, value)):
        raise ValueError('unit_price is 0 to 1000000 with at most two decimal places, as a number or like "12.50"')
    return value


# A JSON number or a decimal string: 12.5 and "12.50" are the same price.
UnitPrice = Annotated[
    Decimal,
    BeforeValidator(_plain_price),
    Field(ge=0, le=MAX_UNIT_PRICE, decimal_places=2, allow_inf_nan=False),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": int(MAX_UNIT_PRICE), "multipleOf": 0.01},
                {"type": "string", "pattern": PRICE_PATTERN},
            ]
        }
    ),
]


class ItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: str = Field(min_length=1, max_length=64)
    # Strict: "5" and true are not quantities; what the document allows is what passes.
    quantity: int = Field(ge=1, le=10_000, strict=True)
    unit_price: UnitPrice

    def to_item(self) -> Item:
        return Item(sku=self.sku, quantity=self.quantity, unit_price=self.unit_price)


class OrderCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[ItemIn] = Field(min_length=1, max_length=MAX_ITEMS)


class CancelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=MAX_REASON_LENGTH)


class ItemOut(BaseModel):
    sku: str
    quantity: int
    unit_price: str  # a decimal string: money never goes through a float


class OrderPublic(BaseModel):
    id: uuid.UUID
    user_id: uuid.UUID
    status: StatusName
    items: list[ItemOut]
    total: str
    currency: str
    version: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, order: Order) -> "OrderPublic":
        return cls(
            id=order.id,
            user_id=order.user_id,
            status=order.status.value,
            items=[ItemOut(sku=i.sku, quantity=i.quantity, unit_price=str(i.unit_price)) for i in order.items],
            total=str(order.total),
            currency=order.currency,
            version=order.version,
            created_at=order.created_at,
            updated_at=order.updated_at,
        )


class OrderList(BaseModel):
    items: list[OrderPublic]
    total: int
    page: int
    limit: int


class OrderEvent(BaseModel):
    id: uuid.UUID
    type: str
    version: int
    position: int | None  # None for the moment between commit and sequencing
    data: dict[str, Any]
    metadata: dict[str, Any]
    recorded_at: datetime

    @classmethod
    def of(cls, event: RecordedEvent) -> "OrderEvent":
        return cls(
            id=event.id,
            type=event.type,
            version=event.version,
            position=event.position,
            data=event.data,
            metadata=event.metadata,
            recorded_at=event.recorded_at,
        )


class ParkedEventPublic(BaseModel):
    """An event the orders projection parked: the event, and why."""

    id: uuid.UUID
    projection: str
    event_id: uuid.UUID
    position: int
    stream_id: str
    type: str
    version: int
    data: dict[str, Any]
    metadata: dict[str, Any]
    recorded_at: datetime
    error: str
    attempts: int
    parked_at: datetime

    @classmethod
    def of(cls, parked: ParkedEvent) -> "ParkedEventPublic":
        event = parked.event
        return cls(
            id=parked.id,
            projection=parked.projection,
            event_id=event.id,
            position=event.position or 0,
            stream_id=event.stream_id,
            type=event.type,
            version=event.version,
            data=event.data,
            metadata=event.metadata,
            recorded_at=event.recorded_at,
            error=parked.error,
            attempts=parked.attempts,
            parked_at=parked.parked_at,
        )


class ParkedEventList(BaseModel):
    items: list[ParkedEventPublic]
    total: int
    page: int
    limit: int


class ParkedEventReplayed(BaseModel):
    id: uuid.UUID
    event_id: uuid.UUID
