"""The tournament's search on its own (issue 15.1-15.3): a run with no seed searches by
prediction; without a prediction it follows the failure, nearest first, and an explicit KV
size takes utilization out and ends the run after one canary with that reason."""
from __future__ import annotations

from selfheal.handlers.ports import NoPredictor, Prediction
from selfheal.handlers.tournament import Tournament
from selfheal.schemas.events import CanaryMeasurements, IntentRaised, RunStarted
from tests.handlers.given_when_then import DEPLOYMENT, ENVIRONMENT, PRODUCTION, Given, deployment, settings
from tests.handlers.test_tournament_unit import FAILED, SEED, Predictor, canary

KV_COMMAND = 'command = ["vllm", "serve", "{model}", "--kv-cache-memory-bytes", "1048576"]'
LEN_FAILED = CanaryMeasurements(started=False, passed_load=False, failure_kind="max_model_len_exceeds_kv_cache",
                                failure_stage="startup")


def started(kind: str = "no_kv_cache_memory", seed_fix: dict | None = None) -> Given:
    intent = IntentRaised(intent_id="i1", deployment=DEPLOYMENT, incident_id="inc-1", observation_id="obs-1",
                          kind=kind, action="tune", fingerprint="fp:1",
                          seed_fix={"gpu_memory_utilization": 0.85} if seed_fix is None else seed_fix,
                          current=PRODUCTION, environment=ENVIRONMENT)
    start = RunStarted(run_id="r1", intent_id="i1", deployment=DEPLOYMENT, mode="dev", current=PRODUCTION,
                       environment=ENVIRONMENT)
    return Given(("intent-i1", intent), ("run-r1", start))


def tournament(predictor, extra: str = "") -> Tournament:
    return Tournament(deployment(settings(extra=extra), predictor=predictor), max_candidates=6, max_changes=2)


def after_failed_seed(handler: Tournament, measurements: CanaryMeasurements, kind: str = "no_kv_cache_memory",
                      seed_fix: dict | None = None):
    """The seed proposed and its canary failed: (the seed, the tournament's answer)."""
    given = started(kind, seed_fix)
    given.when(handler).record()
    seed = [r.event for r in given.events("CandidateProposed")][0]
    canary(given, seed, measurements, minute=1)
    return seed, given.when(handler)


def test_a_run_without_a_seed_starts_with_the_best_predicted_config_inside_the_bounds():
    best = PRODUCTION.changed(max_num_seqs=8, max_num_batched_tokens=1024)
    handler = tournament(Predictor({best: Prediction(passes=True, fitness=9.0),
                                    PRODUCTION.changed(max_num_seqs=8): Prediction(passes=True, fitness=7.0)}))
    then = started(seed_fix={}).when(handler)
    first = then.one("CandidateProposed")
    assert (first.origin, first.rank, first.config, first.predicted) == ("tournament", 0, best, 9.0)


def test_equal_predictions_go_to_the_config_nearest_the_seed_not_to_json_byte_order():
    handler = tournament(Predictor(otherwise=Prediction(passes=True, fitness=1.0)))
    _, then = after_failed_seed(handler, FAILED)
    nxt = then.one("CandidateProposed")
    # every config ties: one change, nearest the seed (utilization 0.85) is utilization 0.9;
    # the JSON's byte order would have picked utilization 0.6
    assert nxt.config == PRODUCTION.changed(gpu_memory_utilization=0.9)


def test_without_a_prediction_the_next_candidate_follows_the_failure_nearest_the_seed():
    handler = tournament(NoPredictor())
    seed, then = after_failed_seed(handler, FAILED)
    assert seed.config == SEED
    nxt = then.one("CandidateProposed")
    # no_kv_cache_memory names utilization up, max_num_seqs and max_num_batched_tokens down; a
    # 512-token step of the batch budget is the nearest move beyond the failed seed
    assert nxt.config == SEED.changed(max_num_batched_tokens=1536) and nxt.predicted is None
    assert nxt.reason == ("no prediction: the nearest of 21 untried configurations that move the way "
                          "no_kv_cache_memory names (gpu_memory_utilization=0.85 with max_num_batched_tokens=1536)")


def test_an_explicit_kv_size_leaves_nothing_after_the_seed_and_the_escalation_names_it():
    handler = tournament(NoPredictor(), KV_COMMAND)
    _, then = after_failed_seed(handler, LEN_FAILED, "max_model_len_exceeds_kv_cache", {"max_model_len": 1024})
    assert then.types == ["EscalationRaised", "RunFinished", "IntentArchived"]
    assert then.one("RunFinished").canaries == 1
    assert then.one("EscalationRaised").reason.startswith(
        "nothing untried inside the bounds moves the way max_model_len_exceeds_kv_cache names further than what "
        "failed: gpu_memory_utilization cannot change the KV cache size, set explicitly by --kv-cache-memory-bytes "
        "1048576 in the deployment's command; max_model_len cannot decrease from 1024 inside the bounds (1 candidates: ")


def test_without_the_explicit_kv_size_utilization_is_still_tried():
    handler = tournament(NoPredictor())
    _, then = after_failed_seed(handler, LEN_FAILED, "max_model_len_exceeds_kv_cache", {"max_model_len": 1024})
    nxt = then.one("CandidateProposed")
    assert nxt.config == PRODUCTION.changed(max_model_len=1024, gpu_memory_utilization=0.85)


EXCERPT = ("ValueError: To serve at least one request with the model's max seq len (8192), (0.88 GiB KV cache is "
           "needed, which is larger than the available KV cache memory (0.72 GiB). Based on the available memory, "
           "the estimated maximum model length is 6768. Try increasing `gpu_memory_utilization` or decreasing "
           "`max_model_len` when initializing the engine.")


def test_without_a_prediction_the_failed_canarys_own_numbers_come_first():
    # production did not fit the free memory; the seed (utilization 0.6) started but its KV cache
    # held 6768 tokens: vLLM's own estimate, snapped down to the grid, is the next candidate
    handler = tournament(NoPredictor())
    measured = CanaryMeasurements(started=False, passed_load=False, failure_stage="startup",
                                  failure_kind="max_model_len_exceeds_kv_cache", excerpt=EXCERPT)
    seed, then = after_failed_seed(handler, measured, "startup_free_memory_below_utilization",
                                   {"gpu_memory_utilization": 0.6})
    nxt = then.one("CandidateProposed")
    assert nxt.config == seed.config.changed(max_model_len=6656)
    assert nxt.reason == ("no prediction: the last canary's own failure (max_model_len_exceeds_kv_cache, "
                          "vllm.kv_cache_max_model_len) names max_model_len=6656")
