"""A passing seed fix, and the one refinement the predictor may ask for before promoting it."""
from __future__ import annotations

import dataclasses

import msgspec

from selfheal.handlers.ports import NoPredictor, Prediction
from selfheal.edges.sim import simulate
from selfheal.handlers.models.search import REFINE_MARGIN
from selfheal.projections.base import View
from selfheal.projections.runs import RunsProjection

LLAMA = "a-llama8b-24gb"
L40S = "d-llama70b-awq-tp2-l40s"
GIB = 1 << 30


class Optimistic:
    """The simulator's predictions, except that configs for which `lie(config)` holds are
    promised to pass with a high fitness."""

    def __init__(self, real, lie, fitness: float = 1000.0):
        self.real, self.lie, self.fitness = real, lie, fitness

    def predict(self, config, production):
        if self.lie(config):
            return Prediction(passes=True, fitness=self.fitness)
        return self.real.predict(config, production)


class Crowded:
    """The scenario's devices with a co-tenant the scenario (and so the predictor) knows nothing of."""

    def __init__(self, real, used_gib: float):
        self.real, self.used = real, round(used_gib * GIB)

    def snapshot(self):
        return [msgspec.structs.replace(d, used_bytes=d.used_bytes + self.used, free_bytes=d.free_bytes - self.used)
                for d in self.real.snapshot()]


def rewire(h, **edges) -> None:
    h.edges[h.scenario] = dataclasses.replace(h.edges[h.scenario], **edges)


def proposals(h):
    return [r.event for r in h.events("CandidateProposed")]


def ended_once(h, outcome: str) -> None:
    """Every path ends the run exactly once: one decision, one RunFinished, one IntentArchived."""
    (finished,) = [r.event for r in h.events("RunFinished")]
    (archived,) = [r.event for r in h.events("IntentArchived")]
    assert finished.outcome == archived.outcome == outcome
    decisions = [r.type for r in h.events("PromotionProposed", "EscalationRaised")]
    assert decisions == ["PromotionProposed" if outcome == "promoted" else "EscalationRaised"]


def scored(h) -> dict:
    return {r.event.candidate_id: r.event for r in h.events("CandidateScored")}


def test_llama_takes_a_refinement_and_promotes_it_for_its_higher_fitness(harness):
    h = harness(LLAMA)
    h.incident()
    seed, refine = proposals(h)
    assert seed.origin == "seed" and seed.changes == {"max_model_len": [131072, 43008]}
    assert refine.origin == "refine" and refine.rank == 1
    assert refine.changes == {"gpu_memory_utilization": [0.9, 0.95], "max_model_len": [131072, 52224]}
    assert refine.predicted >= seed.predicted * REFINE_MARGIN
    assert "the seed passed" in refine.reason
    scores = scored(h)
    assert scores[seed.candidate_id].passed and scores[refine.candidate_id].passed
    assert scores[refine.candidate_id].fitness > scores[seed.candidate_id].fitness
    ended_once(h, "promoted")
    (promotion,) = [r.event for r in h.events("PromotionProposed")]
    assert promotion.candidate_id == refine.candidate_id and promotion.config == refine.config
    assert promotion.fitness == scores[refine.candidate_id].fitness
    assert h.events("RunFinished")[0].event.canaries == 2


def test_a_refinement_that_fails_its_canary_leaves_the_seed_promoted(harness):
    h = harness(LLAMA)
    edges = h.edges[LLAMA]
    # a predictor that promises any context of 64k or more at production's utilization, where
    # ~43.4k tokens of KV fit: vLLM refuses to start every one of them
    def lie(config):
        return config.max_model_len >= 65536 and config.gpu_memory_utilization == edges.current.gpu_memory_utilization

    rewire(h, predictor=Optimistic(edges.predictor, lie))
    h.incident()
    seed, refine = proposals(h)
    assert refine.origin == "refine" and lie(refine.config) and refine.predicted == 1000.0
    assert not simulate(edges.backend.scenario, refine.config).started
    scores = scored(h)
    assert scores[seed.candidate_id].passed and not scores[refine.candidate_id].passed
    ended_once(h, "promoted")
    (promotion,) = [r.event for r in h.events("PromotionProposed")]
    assert promotion.candidate_id == seed.candidate_id and promotion.config == seed.config
    assert promotion.fitness == scores[seed.candidate_id].fitness
    # the refinement's failure is learnt like any other: known to fail in this environment
    runs = View(h.store, [RunsProjection()]).catch_up()["runs"]
    (run,) = runs.by_id.values()
    assert runs.known_failure(run.environment, refine.config)


def test_a_refinement_rejected_in_preflight_leaves_the_seed_promoted(harness):
    h = harness(LLAMA)
    edges = h.edges[LLAMA]
    # 1 GiB taken by a process the predictor does not know: util 0.95 no longer fits, 0.9 still does
    rewire(h, inventory=Crowded(edges.inventory, 1.0))
    h.incident()
    seed, refine = proposals(h)
    assert refine.origin == "refine" and refine.config.gpu_memory_utilization == 0.95
    (rejected,) = [r.event for r in h.events("PreflightRejected")]
    assert rejected.candidate_id == refine.candidate_id
    assert len(h.events("CanaryStarted")) == 1  # no canary spent on the rejected refinement
    ended_once(h, "promoted")
    (promotion,) = [r.event for r in h.events("PromotionProposed")]
    assert promotion.candidate_id == seed.candidate_id


def test_a_deployment_without_fitness_predictions_never_refines(harness):
    h = harness(LLAMA)
    rewire(h, predictor=NoPredictor())
    h.incident()
    (seed,) = proposals(h)
    assert seed.origin == "seed" and seed.predicted is None
    ended_once(h, "promoted")
    (promotion,) = [r.event for r in h.events("PromotionProposed")]
    assert promotion.candidate_id == seed.candidate_id
    assert h.events("RunFinished")[0].event.canaries == 1


def test_a_gain_inside_the_margin_is_not_worth_a_canary(harness):
    # on the L40S pair the best predicted neighbour (util 0.88 -> 0.95) is only ~2% fitter than the seed
    h = harness(L40S)
    h.incident()
    (seed,) = proposals(h)
    assert seed.origin == "seed"
    ended_once(h, "promoted")
    assert h.events("RunFinished")[0].event.canaries == 1
    edges = h.edges[L40S]
    better = edges.current.changed(gpu_memory_utilization=0.95)
    predicted = edges.predictor.predict(better, edges.current).fitness
    assert seed.predicted < predicted < seed.predicted * REFINE_MARGIN


def test_a_failing_seed_goes_to_the_tournament_not_to_a_refinement(harness):
    h = harness()  # the workstation: the seed fails its canary
    h.incident()
    assert [p.origin for p in proposals(h)] == ["seed", "tournament"]
    ended_once(h, "promoted")



def test_the_refinement_is_chosen_deterministically(harness):
    def chosen(h):
        h.incident()
        return [(p.origin, p.config, p.predicted, p.reason) for p in proposals(h)]

    assert chosen(harness(LLAMA)) == chosen(harness(LLAMA))
