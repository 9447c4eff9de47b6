"""The HTTP shapes of the event store: what comes in, what goes out."""

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from event_store.domain.model import MAX_BATCH, NewEvent


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: uuid.UUID
    type: str = Field(min_length=1, max_length=200)
    data: dict[str, Any]
    metadata: dict[str, Any] = Field(default_factory=dict)

    def to_domain(self) -> NewEvent:
        return NewEvent(id=self.id, type=self.type, data=self.data, metadata=self.metadata)


class AppendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # "any", "no_stream", "stream_exists", or the stream's last version.
    expected_version: StrictInt | str
    events: list[EventIn] = Field(min_length=1, max_length=MAX_BATCH)


class AppendOut(BaseModel):
    stream_id: str
    first_version: int
    last_version: int
    already_recorded: bool


class SnapshotIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: StrictInt = Field(ge=1)
    data: dict[str, Any]


class SnapshotOut(BaseModel):
    stream_id: str
    version: int
    data: dict[str, Any]
    saved_at: Any


class PageOut(BaseModel):
    events: list[dict[str, Any]]
    next: int
    end: bool
