"""Intents on its own: an ObservationMade in, one intent out (tune with a bounded seed, or an
escalation), or a fold into the intent already raised."""
from __future__ import annotations

from selfheal.eventstore import derived_id
from selfheal.handlers.intents import RaiseIntent
from selfheal.schemas.events import Finding, ObservationMade
from tests.handlers.given_when_then import DEPLOYMENT, ENVIRONMENT, PRODUCTION, Given, T0, at, deployment

KV_DIR = {"gpu_memory_utilization": "increase", "max_num_seqs": "decrease", "max_num_batched_tokens": "decrease"}


def observation(fix: dict, *, obs_id: str = "obs-1", incident_id: str = "inc-1", canary_id: str | None = None,
                kind: str = "no_kv_cache_memory", direction: dict = KV_DIR) -> ObservationMade:
    finding = Finding(kind=kind, rule=f"vllm.{kind}", rule_version=1, fix=fix, fix_direction=direction,
                      action="tune", evidence=["ValueError: No available memory for the cache blocks."])
    return ObservationMade(observation_id=obs_id, incident_id=incident_id, deployment=DEPLOYMENT, finding=finding,
                           environment=ENVIRONMENT, canary_id=canary_id)


def intents() -> RaiseIntent:
    return RaiseIntent(deployment(), window_minutes=60, max_changes=2)


def test_a_tune_finding_raises_an_intent_with_the_bounded_seed_fix():
    given = Given(("incident-inc-1", observation({"gpu_memory_utilization": 0.85})))
    then = given.when(intents())
    intent_id = derived_id(given.last.event_id, "intent")
    assert then.types == ["IntentRaised"] and then.streams == [f"intent-{intent_id}"]
    raised = then.events[0]
    assert (raised.intent_id, raised.action, raised.kind) == (intent_id, "tune", "no_kv_cache_memory")
    assert (raised.incident_id, raised.observation_id, raised.environment) == ("inc-1", "obs-1", ENVIRONMENT)
    assert raised.seed_fix == {"gpu_memory_utilization": 0.85} and raised.current == PRODUCTION
    assert raised.fingerprint == "fp:a41683c8ef0184af"  # this failure of PRODUCTION, as logs hold it
    then.caused(T0)


def test_a_seed_fix_off_the_grid_is_snapped_on_the_side_of_safety():
    # an increase of utilization to 0.83 becomes the next grid value up, 0.85; a decrease of
    # max_num_seqs to 11 becomes the next grid value down, 10
    given = Given(("incident-inc-1", observation({"gpu_memory_utilization": 0.83, "max_num_seqs": 11})))
    raised = given.when(intents()).one("IntentRaised")
    assert raised.action == "tune" and raised.seed_fix == {"gpu_memory_utilization": 0.85, "max_num_seqs": 10}


def test_a_seed_fix_outside_the_bounds_escalates_with_the_evidence():
    # the finding names no alternative to utilization, and nothing predicts (test_search_directed.py tests the rest)
    given = Given(("incident-inc-1", observation({"gpu_memory_utilization": 0.95},
                                                 direction={"gpu_memory_utilization": "increase"})))
    then = given.when(intents())
    intent_id = derived_id(given.last.event_id, "intent")
    assert then.types == ["IntentRaised", "EscalationRaised", "IntentArchived"]
    assert then.streams == [f"intent-{intent_id}"] * 3
    raised, escalation, archived = then.events
    assert raised.action == "alert" and raised.seed_fix == {}
    reason = ("seed fix outside the bounds: needs gpu_memory_utilization=0.95, above the maximum 0.9; "
              "nothing else the finding names can move inside the bounds")
    assert raised.reason == reason and escalation.reason == reason
    assert (escalation.run_id, escalation.intent_id, escalation.deployment) == (None, intent_id, DEPLOYMENT)
    assert (archived.intent_id, archived.outcome) == (intent_id, "alerted")
    then.caused(T0)


def test_a_fix_that_changes_nothing_escalates():
    then = Given(("incident-inc-1", observation({"max_num_seqs": 16}, direction={"max_num_seqs": "increase"}))
                 ).when(intents())
    assert then.types == ["IntentRaised", "EscalationRaised", "IntentArchived"]
    reason = ("seed fix outside the bounds: the fix changes nothing inside the bounds; nothing else the finding "
              "names can move inside the bounds: max_num_seqs cannot increase from 16 inside the bounds")
    assert then.one("EscalationRaised").reason == reason


def test_the_same_failure_inside_the_window_is_deduplicated():
    given = Given(("incident-inc-1", observation({"gpu_memory_utilization": 0.85})))
    first = given.when(intents())
    first.record()
    raised = first.one("IntentRaised")
    given.record("incident-inc-2", observation({"gpu_memory_utilization": 0.85}, obs_id="obs-2",
                                               incident_id="inc-2"), at(minutes=59))
    then = given.when(intents())
    assert then.types == ["IntentDeduplicated"] and then.streams == [f"intent-{raised.intent_id}"]
    dup = then.events[0]
    assert (dup.intent_id, dup.incident_id, dup.fingerprint, dup.window_s) == (
        raised.intent_id, "inc-2", raised.fingerprint, 3600)
    then.caused(at(minutes=59))


def test_the_same_failure_after_the_window_raises_a_new_intent():
    given = Given(("incident-inc-1", observation({"gpu_memory_utilization": 0.85})))
    given.when(intents()).record()
    given.record("incident-inc-2", observation({"gpu_memory_utilization": 0.85}, obs_id="obs-2",
                                               incident_id="inc-2"), at(minutes=60))
    then = given.when(intents())
    assert then.types == ["IntentRaised"] and then.one("IntentRaised").incident_id == "inc-2"


def test_another_failure_kind_inside_the_window_is_not_folded_in():
    given = Given(("incident-inc-1", observation({"gpu_memory_utilization": 0.85})))
    given.when(intents()).record()
    given.record("incident-inc-2", observation({"max_num_seqs": 8}, obs_id="obs-2", incident_id="inc-2",
                                               kind="preemption_storm", direction={"max_num_seqs": "decrease"}),
                 at(minutes=5))
    assert given.when(intents()).types == ["IntentRaised"]


def test_a_canarys_own_observation_is_evidence_not_an_intent():
    given = Given(("incident-inc-1", observation({"gpu_memory_utilization": 0.85}, canary_id="k1")))
    assert given.when(intents()).emitted == []


def test_an_unconfigured_deployment_escalates():
    given = Given(("incident-inc-1", observation({"gpu_memory_utilization": 0.85})))
    then = given.when(RaiseIntent({}, window_minutes=60, max_changes=2))
    assert then.types == ["IntentRaised", "EscalationRaised", "IntentArchived"]
    assert then.one("EscalationRaised").reason == f"deployment {DEPLOYMENT!r} is not configured"
