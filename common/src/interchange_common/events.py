"""A recorded event, as the event store hands it to readers, subscribers and projections.

Shared by event-store (which records events) and its clients (projection runners,
event-sourced services), so that both sides speak of the same thing.
"""

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    id: uuid.UUID
    stream_id: str
    type: str
    data: dict[str, Any]
    metadata: dict[str, Any]
    version: int  # 1, 2, 3 … within its stream
    position: int | None  # global, in commit order; None until the store has assigned it
    recorded_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "stream_id": self.stream_id,
            "type": self.type,
            "data": self.data,
            "metadata": self.metadata,
            "version": self.version,
            "position": self.position,
            "recorded_at": self.recorded_at.isoformat().replace("+00:00", "Z"),
        }
