"""The rate limit and a run that ended because pre-flight could not read the inventory (issue
15.6): it counts neither as a run (window, cooldown) nor as a failure (backoff), while every
other run counts as before."""
from __future__ import annotations

from datetime import timedelta

from selfheal.eventstore import Pending, derived_id, memory_store
from selfheal.projections.base import rebuild
from selfheal.projections.rate_limit import RateLimitProjection, decide
from selfheal.schemas.config import RateLimitSettings
from selfheal.schemas.events import RunFinished, RunRequested, RunStarted
from selfheal.schemas.serving import ServingConfig
from tests.conftest import T0

LIMITS = RateLimitSettings()
DEPLOYMENT = "ws"


def run(store, n: int, hours: float, *, succeeded: bool = False, blind: bool = False) -> None:
    """Run `n`: requested and started at `hours`, finished a minute later."""
    run_id, at = f"r{n}", T0 + timedelta(hours=hours)
    events = [RunRequested(run_id=run_id, intent_id=f"i{n}", deployment=DEPLOYMENT, mode="dev"),
              RunStarted(run_id=run_id, intent_id=f"i{n}", deployment=DEPLOYMENT, mode="dev",
                         current=ServingConfig(), environment="env:1")]
    for i, event in enumerate(events):
        store.append(f"run-{run_id}", [Pending(event=event, event_id=derived_id(run_id, str(i)), occurred_at=at)])
    finished = RunFinished(run_id=run_id, deployment=DEPLOYMENT, outcome="promoted" if succeeded else "escalated",
                           succeeded=succeeded, canaries=0 if blind else 1, inventory_unavailable=blind)
    store.append(f"run-{run_id}", [Pending(event=finished, event_id=derived_id(run_id, "end"),
                                           occurred_at=at + timedelta(minutes=1))])


def budget(store):
    return rebuild(store, RateLimitProjection())[0].budget(DEPLOYMENT)


def test_a_blind_run_leaves_the_budget_as_it_was():
    store = memory_store()
    run(store, 1, 0, blind=True)
    b = budget(store)
    assert (b.run_starts, b.open_runs, b.consecutive_failures, b.last_failure_at) == ([], [], 0, None)
    assert decide(b, LIMITS, T0 + timedelta(minutes=2)).allowed  # no cooldown, no backoff


def test_an_ordinary_failed_run_still_counts():
    store = memory_store()
    run(store, 1, 0)
    b = budget(store)
    assert b.run_starts == [T0] and b.consecutive_failures == 1
    d = decide(b, LIMITS, T0 + timedelta(minutes=2))
    assert not d.allowed and d.reason.startswith("cooldown: 6 h after the run")


def test_a_blind_run_neither_resets_nor_extends_a_backoff():
    store = memory_store()
    run(store, 1, 0)
    run(store, 2, 6)
    run(store, 3, 7, blind=True)  # refused by the backoff in real life; here: its fold on its own
    b = budget(store)
    assert b.consecutive_failures == 2 and b.last_failure_at == T0 + timedelta(hours=6, minutes=1)
    assert b.run_starts == [T0, T0 + timedelta(hours=6)]
    d = decide(b, LIMITS, T0 + timedelta(hours=8))
    assert not d.allowed and "backoff: 2 failed runs in a row" in d.reason


def test_the_window_counts_the_runs_that_tried_something():
    store = memory_store()
    for n, hours in enumerate((0, 6, 12), start=1):
        run(store, n, hours, succeeded=True)
        run(store, 10 + n, hours + 0.5, blind=True)
    b = budget(store)
    assert len(b.run_starts) == 3
    assert decide(b, LIMITS, T0 + timedelta(hours=18)).reason.startswith("rate limit: 3 runs")
