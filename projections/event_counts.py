"""How many events of each type the log holds, and the time span they cover."""
from __future__ import annotations

import msgspec

from selfheal.eventstore.store import Envelope
from selfheal.projections.base import Projection


class EventCounts(msgspec.Struct):
    total: int = 0
    by_type: dict[str, int] = {}
    first_recorded_at: str | None = None
    last_recorded_at: str | None = None


class EventCountsProjection(Projection[EventCounts]):
    name = "event_counts"
    #: counts and times are in the envelope: no body is decoded for this fold
    body = False

    def initial(self) -> EventCounts:
        return EventCounts()

    def apply(self, state: EventCounts, event: Envelope) -> EventCounts:
        by_type = state.by_type
        by_type[event.type] = by_type.get(event.type, 0) + 1
        state.total += 1
        if state.first_recorded_at is None:
            state.first_recorded_at = event.recorded_at
        state.last_recorded_at = event.recorded_at
        return state
