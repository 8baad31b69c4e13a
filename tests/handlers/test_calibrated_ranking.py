"""The calibrated predictor ranks a real deployment's candidates (issue 15.5): the tournament,
which has no fitness to rank by on a real deployment, follows the failure as before, but
tries first what the calibration from vLLM's printed numbers says will start, never what it
says cannot, and does not spend a cold start on a seed it says cannot start when something
it says will start exists. A search that finds nothing says when it may be retried."""
from __future__ import annotations

from datetime import timedelta

from selfheal.eventstore import derived_id
from selfheal.eventstore.recorder import utc_iso
from selfheal.handlers.intents import RaiseIntent
from selfheal.handlers.models.calibration import StartFacts, calibrate
from selfheal.handlers.ports import Prediction
from selfheal.handlers.predict import CalibratedPredictor
from selfheal.handlers.tournament import Tournament
from selfheal.schemas.events import CandidateProposed, Finding, IntentRaised, ObservationMade, RunStarted
from selfheal.schemas.serving import ServingConfig
from tests.handlers.given_when_then import DEPLOYMENT, ENVIRONMENT, PRODUCTION, Given, T0, deployment
from tests.handlers.test_tournament_unit import FAILED, canary

#: production (utilization 0.8 of a 12 GiB card, max_model_len 8192) as vLLM accounted for it
#: when its KV check failed: 0.25 GiB of cache, 2048 tokens (128 KiB a token). The calibration
#: gives 0.85 about 7000 tokens (cannot hold one 8192-token request), 0.9 about 11900 (can)
ACCOUNTING = {"cal_kv_gib": 0.25, "cal_kv_tokens": 2048, "cal_total_gib": 12.0, "cal_utilization": 0.8}
SEED_FIX = {"gpu_memory_utilization": 0.85}
UNTIL = T0 + timedelta(hours=1)


def started(accounting: dict) -> Given:
    """A real deployment's run: its intent carries what production's failing start printed."""
    intent = IntentRaised(intent_id="i1", deployment=DEPLOYMENT, incident_id="inc-1", observation_id="obs-1",
                          kind="max_model_len_exceeds_kv_cache", action="tune", fingerprint="fp:1",
                          seed_fix=SEED_FIX, current=PRODUCTION, environment=ENVIRONMENT, dedupe_until=UNTIL,
                          accounting=accounting)
    start = RunStarted(run_id="r1", intent_id="i1", deployment=DEPLOYMENT, mode="dev", current=PRODUCTION,
                       environment=ENVIRONMENT)
    return Given(("intent-i1", intent), ("run-r1", start))


def predicted(config: ServingConfig) -> Prediction:
    production = StartFacts(source="inc-1", config=PRODUCTION, numbers=ACCOUNTING)
    return CalibratedPredictor(calibrate([production])).predict(config, PRODUCTION)


def tournament() -> Tournament:
    return Tournament(deployment(), max_candidates=6, max_changes=2)  # NoPredictor: a real deployment


def test_a_seed_predicted_not_to_start_is_not_run_when_a_config_is_predicted_to_start():
    then = started(ACCOUNTING).when(tournament())
    proposed = then.one("CandidateProposed")
    assert proposed.config == PRODUCTION.changed(gpu_memory_utilization=0.9)
    assert (proposed.origin, proposed.rank, proposed.predicted) == ("tournament", 0, None)
    assert proposed.reason.startswith(
        "the seed fix (gpu_memory_utilization=0.85) is predicted not to start (max_model_len_exceeds_kv_cache), "
        "from vLLM's printed numbers, so it is not run; predicted to start (calibrated from vLLM's printed "
        "numbers): the nearest of ")
    # nearer configs (utilization 0.85 with max_model_len 7680, ...) were predicted not to start
    assert "predicted not to start were left out" in proposed.reason


def test_without_printed_numbers_the_seed_runs_as_before():
    then = started({}).when(tournament())
    proposed = then.one("CandidateProposed")
    assert (proposed.config, proposed.origin, proposed.reason) == (PRODUCTION.changed(**SEED_FIX), "seed",
                                                                   "the observer's seed fix")


def after_failed_seed(accounting: dict) -> CandidateProposed:
    """The candidate after a seed whose canary failed, production having printed `accounting`."""
    given = started(accounting)
    seed = CandidateProposed(run_id="r1", candidate_id=derived_id("r1", "candidate", "0"), deployment=DEPLOYMENT,
                             config=PRODUCTION.changed(**SEED_FIX), changes={}, origin="seed", rank=0)
    given.record("run-r1", seed)
    canary(given, seed, FAILED, minute=1)
    return given.when(tournament()).one("CandidateProposed")


def test_after_a_failed_seed_a_config_predicted_to_start_goes_before_nearer_undecided_ones():
    ranked, blind = after_failed_seed(ACCOUNTING), after_failed_seed({})
    assert ranked.config == PRODUCTION.changed(gpu_memory_utilization=0.9)
    assert ranked.reason.startswith("predicted to start (calibrated from vLLM's printed numbers): the nearest of ")
    # blind, the nearest config that follows both failures comes first, though it cannot start
    assert blind.config == PRODUCTION.changed(gpu_memory_utilization=0.85, max_num_batched_tokens=1536)
    assert blind.reason.startswith("no prediction: the nearest of ")
    assert predicted(blind.config).passes is False and predicted(ranked.config).passes is True
    assert "predicted not to start were left out" in ranked.reason and "left out" not in blind.reason


def test_a_search_where_nothing_is_predicted_to_start_escalates_with_the_retry_hint():
    # a cache so small that nothing inside the bounds holds a 1024-token request
    tiny = dict(ACCOUNTING, cal_kv_gib=0.0025, cal_kv_tokens=16, cal_total_gib=0.1)
    given = started(tiny)
    then = given.when(tournament())
    assert then.one("CandidateProposed").origin == "seed"  # nothing predicted to start: the seed runs
    then.record()
    canary(given, given.events("CandidateProposed")[-1].event, FAILED, minute=1)
    then = given.when(tournament())
    assert then.types == ["EscalationRaised", "RunFinished", "IntentArchived"]
    escalation = then.one("EscalationRaised")
    assert escalation.reason.startswith("every one of the ")
    assert "is predicted not to start, from vLLM's printed numbers: " in escalation.reason
    assert escalation.retry == ("a repeat of this failure (same kind, numbers within 10%) until "
                                f"{utc_iso(UNTIL)} folds into intent i1; to retry sooner: selfheal heal --force LOG "
                                "(the rate limit still applies)")


def length_observation(accounting: dict) -> ObservationMade:
    """vLLM's estimate (512 tokens) lies below the operator's floor of 1024: the seed is outside the bounds."""
    finding = Finding(kind="max_model_len_exceeds_kv_cache", rule="vllm.max_model_len_exceeds_kv_cache",
                      rule_version=1, fix={"max_model_len": 512}, action="tune",
                      fix_direction={"max_model_len": "decrease", "gpu_memory_utilization": "increase"})
    return ObservationMade(observation_id="obs-1", incident_id="inc-1", deployment=DEPLOYMENT, finding=finding,
                           environment=ENVIRONMENT, accounting=accounting)


def test_the_intent_of_a_real_deployment_searches_inside_the_bounds_by_the_calibration():
    intents = RaiseIntent(deployment(), window_minutes=60, max_changes=2)
    ranked = Given(("incident-inc-1", length_observation(ACCOUNTING))).when(intents).one("IntentRaised")
    assert (ranked.action, ranked.seed_fix) == ("tune", {})
    assert ranked.reason.endswith("max_model_len=1024 is predicted to work: the tournament searches inside the bounds")
    blind = Given(("incident-inc-1", length_observation({}))).when(intents).one("IntentRaised")
    assert "no prediction: following the finding inside the bounds" in blind.reason and blind.seed_fix


def test_the_intent_of_a_real_deployment_escalates_without_a_canary_when_nothing_is_predicted_to_start():
    tiny = dict(ACCOUNTING, cal_kv_gib=0.0025, cal_kv_tokens=16, cal_total_gib=0.1)
    then = Given(("incident-inc-1", length_observation(tiny))).when(
        RaiseIntent(deployment(), window_minutes=60, max_changes=2))
    assert then.types == ["IntentRaised", "EscalationRaised", "IntentArchived"]
    assert then.one("EscalationRaised").reason.startswith(
        "seed fix outside the bounds: needs max_model_len=512, below the minimum 1024; nothing inside the bounds is "
        "predicted to work: max_model_len=1024 predicted max_model_len_exceeds_kv_cache")
