from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone

import pytest

from selfheal.eventstore import Pending, new_id
from selfheal.schemas.events import IntentArchived

T0 = datetime(2026, 11, 24, 6, 0, tzinfo=timezone.utc)


class StepClock:
    """An injected clock that ticks one millisecond per reading."""

    def __init__(self, start: datetime = T0):
        self._ticks = itertools.count()
        self.start = start

    def __call__(self) -> datetime:
        return self.start + timedelta(milliseconds=next(self._ticks))


@pytest.fixture
def clock() -> StepClock:
    return StepClock()


def archived(i: int | str = 0, *, when: datetime = T0, event_id: str | None = None) -> Pending:
    """A small real event for store tests."""
    return Pending(event=IntentArchived(intent_id=str(i), deployment="chat", outcome="promoted"),
                   event_id=event_id or new_id(), occurred_at=when)
