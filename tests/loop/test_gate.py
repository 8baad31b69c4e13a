"""The gate with real event times, driven by freezegun at the edge that captures incidents."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from freezegun import freeze_time

from selfheal.projections.rate_limit import DeploymentBudget, backoff, decide, next_allowed
from selfheal.schemas.config import RateLimitSettings

T0 = datetime(2026, 11, 24, 0, 0, tzinfo=timezone.utc)
LIMITS = RateLimitSettings()


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def wall_clock():
    return datetime.now(timezone.utc)


def test_fourth_run_inside_24h_is_refused_with_the_right_next_time(harness):
    h = harness(clock=wall_clock)
    for hours in (0, 6, 12):
        with freeze_time(at(hours)):
            h.incident()
    with freeze_time(at(18)):
        h.incident()
    started = h.events("RunStarted")
    assert [r.occurred for r in started] == [at(0), at(6), at(12)]
    (refused,) = [r.event for r in h.events("RunRefused")]
    assert refused.next_allowed_at == at(24)
    assert "rate limit: 3 runs in the last 24 h (limit 3)" in refused.reason
    archived = h.events("IntentArchived")[-1].event
    assert archived.outcome == "refused" and archived.run_id == refused.run_id


def test_cooldown_refuses_until_six_hours_after_the_last_run(harness):
    h = harness(clock=wall_clock)
    with freeze_time(at(0)):
        h.incident()
    with freeze_time(at(2)):
        h.incident()
    (refused,) = [r.event for r in h.events("RunRefused")]
    assert refused.reason.startswith("cooldown: 6 h after the run at 2026-11-24T00:00:00.000000Z")
    assert refused.next_allowed_at == at(6)
    with freeze_time(at(6)):
        h.incident()
    assert len(h.events("RunStarted")) == 2


# bounds so tight that no candidate can work: every run escalates (a failed run)
# utilization 0.60 or production's 0.90 (bounds must hold what production runs: issue 15.6),
# max_model_len pinned: nothing inside starts
HOPELESS = """
[deployments.workstation-12gb-speech.actuators.gpu_memory_utilization]
min = 0.60
max = 0.90
step = 0.30
[deployments.workstation-12gb-speech.actuators.max_model_len]
min = 8192
max = 8192
step = 512
"""


def test_backoff_after_two_failed_runs(harness):
    h = harness(extra=HOPELESS, clock=wall_clock)
    for hours in (0, 6):
        with freeze_time(at(hours)):
            h.incident()
    finished = h.events("RunFinished")
    assert [r.event.succeeded for r in finished] == [False, False]
    with freeze_time(at(11)):
        h.incident()
    (refused,) = [r.event for r in h.events("RunRefused")]
    assert "backoff: 2 failed runs in a row, waiting 6 h after the last" in refused.reason
    assert refused.next_allowed_at == finished[-1].occurred + timedelta(hours=6)
    with freeze_time(refused.next_allowed_at):
        h.incident()  # allowed again, fails a third time: the backoff doubles
    with freeze_time(refused.next_allowed_at + timedelta(hours=6)):
        h.incident()
    last = h.events("RunRefused")[-1].event
    assert "backoff: 3 failed runs in a row, waiting 12 h" in last.reason
    assert last.next_allowed_at == h.events("RunFinished")[-1].occurred + timedelta(hours=12)


def test_decide_rules_without_a_log():
    budget = DeploymentBudget(run_starts=(at(0), at(6), at(12)))
    assert decide(budget, LIMITS, at(17.9)).allowed is False
    d = decide(budget, LIMITS, at(18))
    assert not d.allowed and d.next_allowed_at == at(24) and d.runs_in_window == 3
    assert decide(budget, LIMITS, at(24)).allowed
    assert decide(DeploymentBudget(), LIMITS, at(0)).allowed
    assert not decide(DeploymentBudget(open_runs=("r1",)), LIMITS, at(0)).allowed


def test_backoff_doubles_and_is_capped():
    hours = [backoff(DeploymentBudget(consecutive_failures=n, last_failure_at=at(0)), LIMITS)
             for n in (1, 2, 3, 4, 10)]
    assert hours[0] is None
    assert [h.total_seconds() / 3600 for h in hours[1:]] == [6, 12, 24, 168]
    budget = DeploymentBudget(run_starts=(at(0),), consecutive_failures=3, last_failure_at=at(1))
    assert next_allowed(budget, LIMITS) == at(13)
