"""The gate on its own: an IntentRaised in, a run (or a refusal, or an archive) out."""
from __future__ import annotations

import msgspec

from selfheal.eventstore import derived_id
from selfheal.eventstore.recorder import utc_iso
from selfheal.handlers.gate import Gate
from selfheal.schemas.config import RateLimitSettings
from selfheal.schemas.events import IntentRaised, RunFinished, RunStarted
from tests.handlers.given_when_then import DEPLOYMENT, ENVIRONMENT, PRODUCTION, Given, T0, at

LIMITS = RateLimitSettings()  # 3 runs in 24 h, 6 h cooldown, backoff after 2 failures


def intent(intent_id: str = "i1", action: str = "tune") -> IntentRaised:
    return IntentRaised(intent_id=intent_id, deployment=DEPLOYMENT, incident_id="inc-1", observation_id="obs-1",
                        kind="no_kv_cache_memory", action=action, fingerprint="fp:1",
                        seed_fix={"gpu_memory_utilization": 0.85} if action == "tune" else {},
                        current=PRODUCTION, environment=ENVIRONMENT)


def past_run(run_id: str, started: float, succeeded: bool = True, finished: float | None = None) -> list[tuple]:
    """A run of the deployment `started` hours from T0 (negative: before), finished an hour later."""
    start = RunStarted(run_id=run_id, intent_id=f"i-{run_id}", deployment=DEPLOYMENT, mode="dev", current=PRODUCTION,
                       environment=ENVIRONMENT)
    done = RunFinished(run_id=run_id, deployment=DEPLOYMENT, outcome="promoted" if succeeded else "escalated",
                       succeeded=succeeded, canaries=1)
    end = started + 1 if finished is None else finished
    return [(f"run-{run_id}", start, at(started)), (f"run-{run_id}", done, at(end))]


def test_dev_tune_intent_starts_a_run():
    given = Given(("intent-i1", intent()))
    then = given.when(Gate("dev", LIMITS))
    run_id = derived_id(given.last.event_id, "run")
    assert then.types == ["RunRequested", "RunStarted"]
    assert then.streams == [f"run-{run_id}"] * 2
    requested, started = then.events
    assert (requested.run_id, requested.intent_id, requested.mode) == (run_id, "i1", "dev")
    assert (started.run_id, started.intent_id, started.deployment, started.mode) == (run_id, "i1", DEPLOYMENT, "dev")
    assert started.current == PRODUCTION and started.environment == ENVIRONMENT
    then.caused(T0)


def test_prod_mode_is_recorded_in_the_run():
    then = Given(("intent-i1", intent())).when(Gate("prod", LIMITS))
    assert [e.mode for e in then.events] == ["prod", "prod"]


def test_disabled_archives_the_intent_recorded_only():
    then = Given(("intent-i1", intent())).when(Gate("disabled", LIMITS))
    assert then.types == ["IntentArchived"] and then.streams == ["intent-i1"]
    archived = then.events[0]
    assert (archived.intent_id, archived.outcome, archived.run_id) == ("i1", "recorded_only", None)
    then.caused(T0)


def test_alert_intents_are_not_the_gates_business():
    for mode in ("dev", "disabled"):
        assert Given(("intent-i1", intent(action="alert"))).when(Gate(mode, LIMITS)).emitted == []


def test_a_fourth_run_inside_24_hours_is_refused_until_the_window_slides():
    # three runs 20, 14 and 8 hours ago, each finished well: the cooldown has passed, the window is full
    given = Given(*past_run("a", -20), *past_run("b", -14), *past_run("c", -8), ("intent-i1", intent()))
    then = given.when(Gate("dev", LIMITS))
    run_id = derived_id(given.last.event_id, "run")
    assert then.types == ["RunRequested", "RunRefused", "IntentArchived"]
    assert then.streams == [f"run-{run_id}", f"run-{run_id}", "intent-i1"]
    refused = then.one("RunRefused")
    assert refused.reason == "rate limit: 3 runs in the last 24 h (limit 3)"
    assert refused.next_allowed_at == at(-20 + 24)  # the oldest of the three leaves the window
    archived = then.one("IntentArchived")
    assert (archived.outcome, archived.run_id) == ("refused", run_id)
    then.caused(T0)


def test_two_runs_inside_24_hours_leave_room_for_a_third():
    given = Given(*past_run("a", -20), *past_run("b", -14), ("intent-i1", intent()))
    assert given.when(Gate("dev", LIMITS)).types == ["RunRequested", "RunStarted"]


def test_cooldown_refuses_until_six_hours_after_the_last_run():
    given = Given(*past_run("a", -2), ("intent-i1", intent()))
    then = given.when(Gate("dev", LIMITS))
    refused = then.one("RunRefused")
    assert refused.reason == f"cooldown: 6 h after the run at {utc_iso(at(-2))}"  # the log's one time spelling
    assert refused.next_allowed_at == at(4)
    assert then.one("IntentArchived").outcome == "refused"


def test_the_cooldown_ends_on_the_hour():
    given = Given(*past_run("a", -6), ("intent-i1", intent()))
    assert given.when(Gate("dev", LIMITS)).types == ["RunRequested", "RunStarted"]


def test_backoff_after_two_failed_runs_in_a_row():
    given = Given(*past_run("a", -20, succeeded=False), *past_run("b", -10, succeeded=False, finished=-3),
                  ("intent-i1", intent()))
    refused = given.when(Gate("dev", LIMITS)).one("RunRefused")
    assert refused.reason == "backoff: 2 failed runs in a row, waiting 6 h after the last"
    assert refused.next_allowed_at == at(-3 + 6)


def test_a_run_in_progress_refuses_without_a_next_time():
    start = RunStarted(run_id="open", intent_id="i0", deployment=DEPLOYMENT, mode="dev", current=PRODUCTION,
                       environment=ENVIRONMENT)
    given = Given(("run-open", start, at(-7)), ("intent-i1", intent()))
    refused = given.when(Gate("dev", LIMITS)).one("RunRefused")
    assert refused.reason == "run open is still in progress" and refused.next_allowed_at is None


def test_another_deployments_runs_do_not_count():
    elsewhere = [(stream, msgspec.structs.replace(e, deployment="other"), t) for stream, e, t in past_run("x", -1)]
    given = Given(*elsewhere, ("intent-i1", intent()))
    assert given.when(Gate("dev", LIMITS)).types == ["RunRequested", "RunStarted"]


def test_the_limits_come_from_the_settings():
    given = Given(*past_run("a", -20), ("intent-i1", intent()))
    refused = given.when(Gate("dev", RateLimitSettings(runs=1))).one("RunRefused")
    assert refused.reason == "rate limit: 1 run in the last 24 h (limit 1)" and refused.next_allowed_at == at(4)
