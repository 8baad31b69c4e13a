"""Issue 13, round two, item 12, decision by decision: dedupe and the rate limit never take a
time recorded before the event they decide, but dated after it, at its word (see
tests/reliability/test_round2_config_clock.py for the whole loop)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from selfheal.handlers.gate import Gate
from selfheal.handlers.intents import RaiseIntent
from selfheal.projections.rate_limit import next_allowed
from selfheal.schemas.config import RateLimitSettings
from selfheal.schemas.events import Finding, ObservationMade, RunRequested
from tests.handlers.given_when_then import DEPLOYMENT, ENVIRONMENT, Given, T0, at, deployment
from tests.handlers.test_gate_unit import intent, past_run

LIMITS = RateLimitSettings()  # 3 runs in 24 h, 6 h cooldown, backoff after 2 failures
FUTURE = datetime(2031, 3, 1, 12, 0, tzinfo=timezone.utc)
HOURS_TO_FUTURE = (FUTURE - T0).total_seconds() / 3600


def test_a_run_dated_in_the_future_of_the_decision_counts_as_now():
    given = Given(*past_run("r-future", HOURS_TO_FUTURE), ("intent-i1", intent()))
    then = given.when(Gate("dev", LIMITS))
    assert then.types == ["RunRequested", "RunRefused", "IntentArchived"]
    refused = then.one("RunRefused")
    assert refused.next_allowed_at == T0 + timedelta(hours=LIMITS.cooldown_hours), refused.next_allowed_at
    assert "cooldown" in refused.reason and "recorded at 2031-03-01T12:00:00.000000Z" in refused.reason, refused.reason
    then.caused(T0)


def test_the_rate_limit_state_is_pinned_by_the_next_event_of_the_deployment():
    given = Given(*past_run("r-future", HOURS_TO_FUTURE, succeeded=False),
                  *past_run("r-future-2", HOURS_TO_FUTURE + 7, succeeded=False))
    budget = given.view()["rate_limit"].budget(DEPLOYMENT)
    assert next_allowed(budget, LIMITS) > FUTURE  # nothing says yet that 2031 is wrong
    given.record("run-x", RunRequested(run_id="x", intent_id="i1", deployment=DEPLOYMENT, mode="dev"), T0)
    budget = given.view()["rate_limit"].budget(DEPLOYMENT)
    assert budget.run_starts == [T0, T0] and budget.last_failure_at == T0
    # the later of cooldown (6 h) and backoff after 2 failures (6 h): from T0, not from 2031
    assert next_allowed(budget, LIMITS) == T0 + timedelta(hours=6)
    # runs after it are counted from their own times again
    given.record("run-y", past_run("y", 7)[0][1], at(7))
    assert given.view()["rate_limit"].budget(DEPLOYMENT).run_starts == [T0, T0, at(7)]


def test_a_run_a_little_earlier_in_the_log_is_counted_as_usual():
    given = Given(*past_run("r1", -2), ("intent-i1", intent()))
    assert given.when(Gate("dev", LIMITS)).one("RunRefused").next_allowed_at == at(4)


FINDING = Finding(kind="no_kv_cache_memory", rule="vllm.no_kv_cache", rule_version=1, action="tune",
                  fix={"gpu_memory_utilization": 0.85}, fix_direction={"gpu_memory_utilization": "increase"})


def observation(n: int) -> tuple:
    obs = ObservationMade(observation_id=f"obs-{n}", incident_id=f"inc-{n}", deployment=DEPLOYMENT, finding=FINDING,
                          environment=ENVIRONMENT)
    return (f"incident-inc-{n}", obs)


def _raised_then(first_at: datetime, window_minutes: float = 60):
    handler = RaiseIntent(deployment(), window_minutes=window_minutes, max_changes=2)
    given = Given((*observation(1), first_at))
    given.when(handler).record()
    given.record(*observation(2), T0)
    return given.when(handler)


def test_an_intent_dated_in_the_future_of_the_observation_is_expired_not_fresh():
    for window in (0, 60):
        then = _raised_then(FUTURE, window)
        assert then.types[0] == "IntentRaised", (window, then.types)
        assert "dated 2031-03-01T12:00:00.000000Z" in then.events[0].reason, then.events[0].reason


def test_dedupe_inside_the_window_is_unchanged():
    assert _raised_then(T0 - timedelta(minutes=10)).types == ["IntentDeduplicated"]
    assert _raised_then(T0 - timedelta(minutes=61)).types[0] == "IntentRaised"
    # two watchers appending a moment out of order are still one failure
    assert _raised_then(T0 + timedelta(seconds=30)).types == ["IntentDeduplicated"]
    assert _raised_then(T0 + timedelta(seconds=30), window_minutes=0).types[0] == "IntentRaised"
