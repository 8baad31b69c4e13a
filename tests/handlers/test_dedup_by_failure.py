"""Deduplication by failure, not by deployment (issue 15.7): a repeat folds into an intent only
when it is the same failure with the same numbers (within 10%) inside the window; a forced
retry is never folded; an intent that alerts says until when, and how to retry sooner."""
from __future__ import annotations

from datetime import timedelta

import pytest

from selfheal.eventstore.recorder import utc_iso
from selfheal.handlers.intents import RaiseIntent, fingerprint
from selfheal.projections.intents import TOLERANCE, same_numbers
from selfheal.schemas.events import Finding, IntentRaised, ObservationMade, RetryForced
from tests.handlers.given_when_then import DEPLOYMENT, ENVIRONMENT, PRODUCTION, Given, T0, at, deployment

KIND = "max_model_len_exceeds_kv_cache"
RULE = f"vllm.{KIND}"
DOWN = {"max_model_len": "decrease"}


def observation(estimated: float, fix: int, *, n: int = 1, numbers: dict | None = None) -> ObservationMade:
    """vLLM's estimated maximum model length, and the seed fix the rule took from it."""
    finding = Finding(kind=KIND, rule=RULE, rule_version=1, action="tune", fix={"max_model_len": fix},
                      fix_direction=DOWN, numbers={"max_model_len": 8192, "estimated_max_model_len": estimated}
                      if numbers is None else numbers)
    return ObservationMade(observation_id=f"obs-{n}", incident_id=f"inc-{n}", deployment=DEPLOYMENT,
                           finding=finding, environment=ENVIRONMENT)


def intents() -> RaiseIntent:
    return RaiseIntent(deployment(), window_minutes=60, max_changes=2)


def first(estimated: float = 6768, fix: int = 6144) -> tuple[Given, IntentRaised]:
    given = Given(("incident-inc-1", observation(estimated, fix)))
    then = given.when(intents())
    then.record()
    return given, then.one("IntentRaised")


def test_numbers_within_the_tolerance_fold_into_the_intent():
    given, raised = first(6768)
    given.record("incident-inc-2", observation(6768 * 0.91, 6144, n=2), at(minutes=10))  # 9% lower
    then = given.when(intents())
    assert then.types == ["IntentDeduplicated"] and then.one("IntentDeduplicated").intent_id == raised.intent_id


def test_numbers_beyond_the_tolerance_raise_an_intent_of_their_own_that_says_why():
    given, raised = first(6768)
    given.record("incident-inc-2", observation(3000, 2560, n=2), at(minutes=10))
    then = given.when(intents())
    assert then.types == ["IntentRaised"]
    second = then.one("IntentRaised")
    assert second.intent_id != raised.intent_id and second.seed_fix == {"max_model_len": 2560}
    assert second.fingerprint == raised.fingerprint  # the same failure kind, rule and config: other numbers
    assert (f"not folded into intent {raised.intent_id[:8]} of the same kind: its numbers differ by more than 10% "
            "(estimated_max_model_len 6768 then 3000)") in second.reason
    assert second.numbers == {"max_model_len": 8192, "estimated_max_model_len": 3000}


def test_a_repeat_folds_into_the_intent_whose_numbers_it_shares_not_the_latest():
    given, raised = first(6768)
    given.record("incident-inc-2", observation(3000, 2560, n=2), at(minutes=10))
    given.when(intents()).record()
    given.record("incident-inc-3", observation(6700, 6144, n=3), at(minutes=20))
    then = given.when(intents())
    assert then.types == ["IntentDeduplicated"] and then.one("IntentDeduplicated").intent_id == raised.intent_id


def test_a_fixable_failure_after_an_alert_is_not_swallowed():
    """The issue's case: an intent that alerted (the fix needs a value below the floor), then a
    fixable failure of the same kind within the window: it gets its own intent and its run."""
    given = Given(("incident-inc-1", observation(600, 512)))   # below the bounds' floor of 1024
    alerted = given.when(intents())
    assert alerted.types == ["IntentRaised", "EscalationRaised", "IntentArchived"]
    alerted.record()
    escalation = alerted.one("EscalationRaised")
    until = T0 + timedelta(minutes=60)
    assert alerted.one("IntentRaised").dedupe_until == until
    assert escalation.retry == (f"a repeat of this failure (same kind, numbers within 10%) until {utc_iso(until)} "
                                f"folds into intent {escalation.intent_id[:8]}; to retry sooner: selfheal heal "
                                "--force LOG (the rate limit still applies)")
    given.record("incident-inc-2", observation(6768, 6144, n=2), at(minutes=5))
    then = given.when(intents())
    assert then.types == ["IntentRaised"] and then.one("IntentRaised").action == "tune"


def test_a_forced_retry_is_never_folded_and_says_so():
    given, raised = first(6768)
    given.record("incident-inc-2", RetryForced(incident_id="inc-2", deployment=DEPLOYMENT), at(minutes=10))
    given.record("incident-inc-2", observation(6768, 6144, n=2), at(minutes=10))
    then = given.when(intents())
    assert then.types == ["IntentRaised"]
    assert f"forced (heal --force): not folded into intent {raised.intent_id[:8]}" in then.one("IntentRaised").reason


def test_a_force_for_another_incident_changes_nothing():
    given, raised = first(6768)
    given.record("incident-inc-9", RetryForced(incident_id="inc-9", deployment=DEPLOYMENT), at(minutes=10))
    given.record("incident-inc-2", observation(6768, 6144, n=2), at(minutes=10))
    assert given.when(intents()).types == ["IntentDeduplicated"]


def test_an_intent_recorded_before_numbers_were_kept_folds_any_repeat():
    # an old log: IntentRaised without numbers; its repeats fold as they did
    fp = fingerprint(DEPLOYMENT, KIND, RULE, PRODUCTION)
    old = IntentRaised(intent_id="old-1", deployment=DEPLOYMENT, incident_id="inc-0", observation_id="obs-0",
                       kind=KIND, action="tune", fingerprint=fp, seed_fix={"max_model_len": 6144},
                       current=PRODUCTION, environment=ENVIRONMENT)
    given = Given(("intent-old-1", old))
    given.record("incident-inc-2", observation(3000, 2560, n=2), at(minutes=10))
    then = given.when(intents())
    assert then.types == ["IntentDeduplicated"] and then.one("IntentDeduplicated").intent_id == "old-1"


@pytest.mark.parametrize(("a", "b", "same"), [
    ({"x": 100}, {"x": 90}, True),             # exactly 10% of the larger
    ({"x": 100}, {"x": 89.9}, False),
    ({"x": 90}, {"x": 100}, True),             # symmetric
    ({"x": 0}, {"x": 0}, True),
    ({"x": 0}, {"x": 1}, False),
    ({"x": -10}, {"x": 10}, False),
    ({"x": 100, "y": 5}, {"x": 100, "y": 50}, False),  # any number apart is enough
    ({"x": 100}, {"y": 1}, True),              # nothing in common: the fingerprint decides
    ({}, {"x": 1}, True),
])
def test_same_numbers(a, b, same):
    assert TOLERANCE == 0.10
    assert same_numbers(a, b) is same
