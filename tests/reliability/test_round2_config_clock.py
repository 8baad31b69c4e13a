"""Issue 13, round two, item 12: one forward clock jump suppressed healing.

Found by an outside tester's scripts: after one run with the clock in 2031, the same failure
at today's time was deduplicated even with a zero window (its age was negative, and a
negative age is below any window), and `state` said the next run was allowed in 2031.

The decisions now take no time recorded before an event, but dated after it, at its word:
dedupe treats a future-dated intent as expired (one more intent costs little; folding a
failure into a doubtful one hides it), and the rate limit counts a future-dated run as
having happened at the event that proves it past (the latest time it can have happened, so
the budget is never overspent, and the wait is one cooldown, not five years).
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from selfheal.projections.queries import state
from tests.conftest import T0, StepClock
from tests.loop.conftest import Harness, settings_for

FUTURE = datetime(2031, 3, 1, 12, 0, tzinfo=timezone.utc)
COOLDOWN = timedelta(hours=6)


@pytest.mark.parametrize("window_minutes", [0, 60])
def test_a_forward_clock_jump_does_not_suppress_the_next_healing(tmp_path, window_minutes):
    h = Harness(tmp_path / "log.db", settings_for(extra=f"[observer]\ndedupe_window_minutes = {window_minutes}"),
                clock=StepClock(FUTURE))
    h.incident()  # one run with the clock in 2031
    assert [r.type for r in h.events("RunFinished", "IntentDeduplicated")] == ["RunFinished"]

    # asked today, before anything else is recorded, `state` does not promise 2031 either
    (row,) = [s for s in state(h.store, h.settings.rate_limit, T0) if s.deployment == h.scenario]
    assert row.next_allowed_at == T0 + COOLDOWN, row.next_allowed_at

    h.clock = StepClock(T0)  # the clock is right again: the same failure, today
    h.incident()
    assert h.events("IntentDeduplicated") == [], "folded into the intent dated 2031"
    second = h.events("IntentRaised")[-1]
    assert second.occurred < FUTURE and "dated " + FUTURE.isoformat()[:10] in second.event.reason
    refused = h.events("RunRefused")
    assert len(refused) == 1, [r.type for r in h.events()][-6:]
    # the 2031 run counts as having happened now, at the first event that proves it past
    assert refused[0].event.next_allowed_at == second.occurred + COOLDOWN
    assert "recorded at 2031-03-01" in refused[0].event.reason, refused[0].event.reason
    rows = {s.deployment: s for s in state(h.store, h.settings.rate_limit, T0)}
    assert rows[h.scenario].next_allowed_at == second.occurred + COOLDOWN

    h.clock = StepClock(T0 + COOLDOWN + timedelta(minutes=1))  # after the cooldown: healed again
    h.incident()
    assert len(h.events("RunStarted")) == 2 and len(h.events("RunFinished")) == 2
    h.store.close()
