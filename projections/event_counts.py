"""How many events of each type the log holds, and the time span they cover."""
from __future__ import annotations

import msgspec

from selfheal.eventstore.store import Recorded
from selfheal.projections.base import Projection


class EventCounts(msgspec.Struct, frozen=True):
    total: int = 0
    by_type: dict[str, int] = {}
    first_recorded_at: str | None = None
    last_recorded_at: str | None = None


class EventCountsProjection(Projection[EventCounts]):
    name = "event_counts"

    def initial(self) -> EventCounts:
        return EventCounts()

    def apply(self, state: EventCounts, event: Recorded) -> EventCounts:
        by_type = dict(state.by_type)
        by_type[event.type] = by_type.get(event.type, 0) + 1
        return EventCounts(
            total=state.total + 1, by_type=by_type,
            first_recorded_at=state.first_recorded_at or event.recorded_at,
            last_recorded_at=event.recorded_at,
        )
