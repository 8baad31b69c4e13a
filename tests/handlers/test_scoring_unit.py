"""Scoring on its own: a CanaryCompleted in, a CandidateScored with the fitness out."""
from __future__ import annotations

import math

import pytest

from selfheal.handlers.scoring import ScoreCanary
from selfheal.schemas.events import CanaryCompleted, CanaryMeasurements, CandidateProposed, RunStarted
from tests.handlers.given_when_then import DEPLOYMENT, ENVIRONMENT, PRODUCTION, Given, at

MARGIN_GIB = 0.5


def canary(measurements: CanaryMeasurements, max_model_len: int = 8192) -> Given:
    config = PRODUCTION.changed(max_num_seqs=8, max_model_len=max_model_len)
    start = RunStarted(run_id="r1", intent_id="i1", deployment=DEPLOYMENT, mode="dev", current=PRODUCTION,
                       environment=ENVIRONMENT)
    proposed = CandidateProposed(run_id="r1", candidate_id="c1", deployment=DEPLOYMENT, config=config,
                                 changes={"max_num_seqs": [16, 8]}, origin="seed", rank=0)
    completed = CanaryCompleted(run_id="r1", candidate_id="c1", canary_id="k1", backend="fake", simulated=False,
                                measurements=measurements, log_incident_id="inc-k1")
    return Given(("run-r1", start), ("run-r1", proposed), ("run-r1", completed, at(minutes=3)))


def passing(**values) -> CanaryMeasurements:
    return CanaryMeasurements(**{"started": True, "passed_load": True, "throughput_tok_s": 100.0,
                                 "max_concurrency": 4.0, "gpu_headroom_gib": 1.0, **values})


def test_a_canary_that_did_not_start_fails_without_fitness():
    given = canary(CanaryMeasurements(started=False, passed_load=False, failure_kind="no_kv_cache_memory",
                                      failure_stage="startup"))
    then = given.when(ScoreCanary(MARGIN_GIB))
    assert then.types == ["CandidateScored"] and then.streams == ["run-r1"]
    scored = then.events[0]
    assert (scored.run_id, scored.candidate_id, scored.passed, scored.fitness) == ("r1", "c1", False, None)
    assert scored.reason == "did not start: no_kv_cache_memory" and scored.components == {}
    then.caused(at(minutes=3))


def test_a_canary_that_failed_the_load_phase_fails_without_fitness():
    given = canary(CanaryMeasurements(started=True, passed_load=False, failure_kind="cuda_oom_allocation",
                                      failure_stage="load", throughput_tok_s=80.0))
    scored = given.when(ScoreCanary(MARGIN_GIB)).one("CandidateScored")
    assert (scored.passed, scored.fitness) == (False, None)
    assert scored.reason == "failed under load: cuda_oom_allocation"


def test_a_passing_canary_has_the_documented_fitness_and_its_components():
    then = canary(passing()).when(ScoreCanary(MARGIN_GIB))
    scored = then.one("CandidateScored")
    assert scored.passed and scored.reason == "passed"
    assert scored.components == {"throughput_tok_s": 100.0, "capacity": 1.0, "context": 1.0, "headroom": 1.0}
    assert scored.fitness == 100.0
    then.caused(at(minutes=3))


def test_capacity_rewards_kv_room_up_to_ten_percent():
    scored = canary(passing(max_concurrency=2.0)).when(ScoreCanary(MARGIN_GIB)).one("CandidateScored")
    assert scored.components["capacity"] == 0.95 and scored.fitness == 95.0
    scored = canary(passing(max_concurrency=40.0)).when(ScoreCanary(MARGIN_GIB)).one("CandidateScored")
    assert scored.components["capacity"] == 1.0


def test_a_shorter_context_than_production_is_discounted():
    scored = canary(passing(), max_model_len=4096).when(ScoreCanary(MARGIN_GIB)).one("CandidateScored")
    assert scored.components["context"] == round(math.sqrt(0.5), 4)
    assert scored.fitness == pytest.approx(100 * math.sqrt(0.5), abs=1e-3)


def test_headroom_below_the_margin_is_penalised_in_proportion():
    scored = canary(passing(gpu_headroom_gib=0.25)).when(ScoreCanary(MARGIN_GIB)).one("CandidateScored")
    assert scored.passed and scored.components["headroom"] == 0.5 and scored.fitness == 50.0
    assert scored.reason == "passed; headroom 0.25 GiB is below the margin"


def test_headroom_penalty_is_floored_at_a_tenth():
    scored = canary(passing(gpu_headroom_gib=0.0)).when(ScoreCanary(MARGIN_GIB)).one("CandidateScored")
    assert scored.components["headroom"] == 0.1 and scored.fitness == 10.0
