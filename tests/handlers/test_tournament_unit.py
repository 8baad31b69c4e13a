"""The tournament on its own: RunStarted, PreflightRejected or CandidateScored in; the next
candidate, a promotion or an escalation out."""
from __future__ import annotations

from selfheal.eventstore import derived_id
from selfheal.handlers.ports import Prediction
from selfheal.handlers.tournament import Tournament
from selfheal.schemas.events import (
    CanaryCompleted, CanaryMeasurements, CandidateProposed, CandidateScored, IntentRaised, PreflightPassed,
    PreflightRejected, RunStarted,
)
from selfheal.schemas.serving import ServingConfig
from tests.handlers.given_when_then import DEPLOYMENT, ENVIRONMENT, PRODUCTION, Given, T0, at, deployment

SEED = PRODUCTION.changed(gpu_memory_utilization=0.85)
#: the one configuration the fake predictor expects to work after the seed
ALTERNATIVE = PRODUCTION.changed(max_num_seqs=8)
FAILED = CanaryMeasurements(started=False, passed_load=False, failure_kind="no_kv_cache_memory",
                            failure_stage="startup")
PASSED = CanaryMeasurements(started=True, passed_load=True, throughput_tok_s=90.0, max_concurrency=4.0,
                            gpu_headroom_gib=1.0)


class Predictor:
    """A fake predictor: a table of predictions, and one answer for every other config."""

    def __init__(self, table: dict[ServingConfig, Prediction] | None = None,
                 otherwise: Prediction = Prediction(passes=False)):
        self.table, self.otherwise = table or {}, otherwise

    def predict(self, config: ServingConfig, production: ServingConfig) -> Prediction:
        assert production == PRODUCTION
        return self.table.get(config, self.otherwise)


def tournament(predictor=None, max_candidates: int = 6) -> Tournament:
    predictor = predictor or Predictor({ALTERNATIVE: Prediction(passes=True)})
    return Tournament(deployment(predictor=predictor), max_candidates=max_candidates, max_changes=2)


def run_started(mode: str = "dev", run_id: str = "r1", intent_id: str = "i1") -> Given:
    intent = IntentRaised(intent_id=intent_id, deployment=DEPLOYMENT, incident_id="inc-1", observation_id="obs-1",
                          kind="no_kv_cache_memory", action="tune", fingerprint="fp:1",
                          seed_fix={"gpu_memory_utilization": 0.85}, current=PRODUCTION, environment=ENVIRONMENT)
    start = RunStarted(run_id=run_id, intent_id=intent_id, deployment=DEPLOYMENT, mode=mode, current=PRODUCTION,
                       environment=ENVIRONMENT)
    return Given((f"intent-{intent_id}", intent), (f"run-{run_id}", start))


def canary(given: Given, proposed: CandidateProposed, measurements: CanaryMeasurements, minute: float,
           fitness: float | None = None, simulated: bool = False) -> None:
    """The candidate's pre-flight, canary and score, as the other handlers record them."""
    stream, cid = f"run-{proposed.run_id}", proposed.candidate_id
    given.record(stream, PreflightPassed(run_id=proposed.run_id, candidate_id=cid, required_bytes=1, free_bytes=2,
                                         margin_bytes=0, snapshot=[]), at(minutes=minute))
    given.record(stream, CanaryCompleted(run_id=proposed.run_id, candidate_id=cid, canary_id=f"k-{cid}",
                                         backend="fake", simulated=simulated, measurements=measurements),
                 at(minutes=minute + 1))
    passed = measurements.passed_load
    given.record(stream, CandidateScored(run_id=proposed.run_id, candidate_id=cid, passed=passed,
                                         fitness=fitness if passed else None,
                                         reason="passed" if passed else "did not start: no_kv_cache_memory"),
                 at(minutes=minute + 1))


def seeded(handler: Tournament, **kw) -> tuple[Given, CandidateProposed]:
    given = run_started(**kw)
    then = given.when(handler)
    then.record()
    return given, then.one("CandidateProposed")


def test_run_started_proposes_the_seed_first():
    given = run_started()
    then = given.when(tournament())
    assert then.types == ["CandidateProposed"] and then.streams == ["run-r1"]
    seed = then.events[0]
    assert (seed.run_id, seed.candidate_id, seed.origin, seed.rank) == ("r1", derived_id("r1", "candidate", "0"),
                                                                      "seed", 0)
    assert seed.config == SEED and seed.changes == {"gpu_memory_utilization": [0.8, 0.85]}
    assert seed.reason == "the observer's seed fix" and seed.predicted is None
    then.caused(T0)


def test_a_failed_seed_leads_to_the_next_candidate_the_predictor_expects_to_work():
    handler = tournament()
    given, seed = seeded(handler)
    canary(given, seed, FAILED, minute=1)
    then = given.when(handler)
    assert then.types == ["CandidateProposed"] and then.streams == ["run-r1"]
    nxt = then.events[0]
    assert (nxt.origin, nxt.rank, nxt.candidate_id) == ("tournament", 1, derived_id("r1", "candidate", "1"))
    assert nxt.config == ALTERNATIVE and nxt.changes == {"max_num_seqs": [16, 8]}
    assert nxt.reason.startswith("best predicted of 1 untried configurations around no_kv_cache_memory")
    then.caused(at(minutes=2))


def test_a_seed_rejected_in_preflight_leads_to_the_next_candidate():
    handler = tournament()
    given, seed = seeded(handler)
    given.record("run-r1", PreflightRejected(run_id="r1", candidate_id=seed.candidate_id, reason="GPU 0: too big",
                                             required_bytes=2, free_bytes=1, margin_bytes=0, snapshot=[]),
                 at(minutes=1))
    then = given.when(handler)
    assert then.types == ["CandidateProposed"] and then.one("CandidateProposed").config == ALTERNATIVE
    then.caused(at(minutes=1))


def test_a_failed_seed_with_nothing_left_to_try_escalates_and_finishes_the_run():
    handler = tournament(Predictor())  # every other config is predicted to fail
    given, seed = seeded(handler)
    canary(given, seed, FAILED, minute=1)
    then = given.when(handler)
    assert then.types == ["EscalationRaised", "RunFinished", "IntentArchived"]
    assert then.streams == ["run-r1", "run-r1", "intent-i1"]
    escalation, finished, archived = then.events
    assert escalation.reason == ("no untried configuration inside the bounds is predicted to work "
                                 f"(1 candidates: {seed.candidate_id[:8]} did not start: no_kv_cache_memory)")
    assert (escalation.run_id, escalation.intent_id) == ("r1", "i1")
    assert [(c.candidate_id, c.config, c.failure_kind) for c in escalation.candidates] == [
        (seed.candidate_id, SEED, "no_kv_cache_memory")]
    assert (finished.outcome, finished.succeeded, finished.canaries) == ("escalated", False, 1)
    assert (archived.intent_id, archived.outcome, archived.run_id) == ("i1", "escalated", "r1")
    then.caused(at(minutes=2))


def test_the_tournaments_budget_ends_the_run():
    handler = tournament(max_candidates=1)
    given, seed = seeded(handler)
    canary(given, seed, FAILED, minute=1)
    second = given.when(handler)
    second.record()
    canary(given, second.one("CandidateProposed"), FAILED, minute=10)
    then = given.when(handler)
    assert then.types == ["EscalationRaised", "RunFinished", "IntentArchived"]
    assert then.one("EscalationRaised").reason.startswith("tournament budget of 1 candidates spent (2 candidates: ")
    assert then.one("RunFinished").canaries == 2


def test_a_passing_seed_is_promoted_when_the_predictor_cannot_say_better():
    handler = tournament()
    given, seed = seeded(handler)
    canary(given, seed, PASSED, minute=1, fitness=90.0)
    then = given.when(handler)
    promotion_id = derived_id("r1", "promotion")
    assert then.types == ["PromotionProposed", "RunFinished", "IntentArchived"]
    assert then.streams == [f"promotion-{promotion_id}", "run-r1", "intent-i1"]
    promotion, finished, archived = then.events
    assert (promotion.promotion_id, promotion.run_id, promotion.candidate_id) == (promotion_id, "r1",
                                                                                 seed.candidate_id)
    assert promotion.config == SEED and promotion.previous == PRODUCTION and promotion.fitness == 90.0
    assert promotion.simulated is False and promotion.requires_approval is False
    assert promotion.evidence_hash.startswith("sha256:")
    assert (finished.outcome, finished.succeeded, finished.canaries) == ("promoted", True, 1)
    assert (archived.outcome, archived.run_id) == ("promoted", "r1")
    then.caused(at(minutes=2))


def test_a_prod_run_promotes_for_approval_and_a_simulated_canary_says_so():
    handler = tournament()
    given, seed = seeded(handler, mode="prod")
    canary(given, seed, PASSED, minute=1, fitness=90.0, simulated=True)
    promotion = given.when(handler).one("PromotionProposed")
    assert promotion.requires_approval is True and promotion.simulated is True


def test_a_config_known_to_fail_here_is_never_the_seed_again():
    handler = tournament()
    given, seed = seeded(handler, run_id="r0", intent_id="i0")
    canary(given, seed, FAILED, minute=1)
    for item in (("intent-i1", run_started().events("IntentRaised")[0].event),
                 ("run-r1", run_started().events("RunStarted")[0].event)):
        given.record(*item, occurred_at=at(hours=1))
    first = given.when(handler).one("CandidateProposed")
    assert (first.run_id, first.origin, first.rank, first.config) == ("r1", "tournament", 0, ALTERNATIVE)


# -- a passing seed with a predictor that gives fitness: at most one refinement --------------

REFINED = SEED.changed(max_num_seqs=8)


def refining() -> Tournament:
    return tournament(Predictor({SEED: Prediction(passes=True, fitness=100.0),
                                 REFINED: Prediction(passes=True, fitness=120.0)},
                                otherwise=Prediction(passes=True, fitness=50.0)))


def test_a_passing_seed_gets_one_refinement_when_the_predictor_expects_clearly_better():
    handler = refining()
    given, seed = seeded(handler)
    assert seed.predicted == 100.0
    canary(given, seed, PASSED, minute=1, fitness=90.0)
    then = given.when(handler)
    assert then.types == ["CandidateProposed"] and then.streams == ["run-r1"]
    refine = then.events[0]
    assert (refine.origin, refine.rank, refine.config, refine.predicted) == ("refine", 1, REFINED, 120.0)
    assert refine.changes == {"gpu_memory_utilization": [0.8, 0.85], "max_num_seqs": [16, 8]}
    then.caused(at(minutes=2))


def test_a_failed_refinement_leaves_the_seed_to_be_promoted():
    handler = refining()
    given, seed = seeded(handler)
    canary(given, seed, PASSED, minute=1, fitness=90.0)
    refinement = given.when(handler)
    refinement.record()
    canary(given, refinement.one("CandidateProposed"), FAILED, minute=10)
    then = given.when(handler)
    assert then.types == ["PromotionProposed", "RunFinished", "IntentArchived"]
    promotion = then.one("PromotionProposed")
    assert promotion.candidate_id == seed.candidate_id and promotion.config == SEED and promotion.fitness == 90.0
    assert then.one("RunFinished").canaries == 2


def test_the_fitter_refinement_is_promoted():
    handler = refining()
    given, seed = seeded(handler)
    canary(given, seed, PASSED, minute=1, fitness=90.0)
    refinement = given.when(handler)
    refinement.record()
    canary(given, refinement.one("CandidateProposed"), PASSED, minute=10, fitness=110.0)
    promotion = given.when(handler).one("PromotionProposed")
    assert promotion.config == REFINED and promotion.fitness == 110.0


def test_a_finished_run_is_left_alone():
    handler = tournament()
    given, seed = seeded(handler)
    canary(given, seed, PASSED, minute=1, fitness=90.0)
    given.when(handler).record()
    scored = given.events("CandidateScored")[-1]
    assert given.when(handler, scored).emitted == []


def test_a_refinement_rejected_in_preflight_leaves_the_seed_to_be_promoted():
    handler = refining()
    given, seed = seeded(handler)
    canary(given, seed, PASSED, minute=1, fitness=90.0)
    refinement = given.when(handler)
    refinement.record()
    refine = refinement.one("CandidateProposed")
    given.record("run-r1", PreflightRejected(run_id="r1", candidate_id=refine.candidate_id, reason="GPU 0: too big",
                                             required_bytes=2, free_bytes=1, margin_bytes=0, snapshot=[]),
                 at(minutes=5))
    then = given.when(handler)
    assert then.types == ["PromotionProposed", "RunFinished", "IntentArchived"]
    assert then.one("PromotionProposed").candidate_id == seed.candidate_id
    assert then.one("RunFinished").canaries == 1
    then.caused(at(minutes=5))
