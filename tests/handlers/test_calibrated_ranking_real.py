"""The calibrated ranking on a real deployment, end to end (issue 15.5): canaries are real
processes (the faithful fake vLLM, tests/fakes/fake_vllm.py), which print vLLM's own startup
accounting; the deployment has no predictor of its own (canary_backend = "vllm").

Production's start on the 12 GB workstation fails vLLM's free-memory check at utilization 0.9,
before any KV figure is printed; the seed (0.6) starts the engine but its cache cannot hold one
8192-token request, and its log says by how much. Blind, the search then tries the nearest config
the failures name, which preempts under load, and only the third canary passes. Calibrated
from the seed's printed numbers, the search goes straight to a config predicted to start."""
from __future__ import annotations

from selfheal.edges.deployments import build
from selfheal.edges.sim import load_scenario, simulate
from selfheal.eventstore import open_store
from selfheal.handlers import loop
from selfheal.handlers.ports import Prediction
from selfheal.handlers.predict import CalibratedPredictor
from selfheal.schemas.config import parse_settings
from selfheal.schemas.events import IncidentSource
from tests.conftest import StepClock
from tests.fakes.deployment import fake_vllm_deployment

SCENARIO = "workstation-12gb-speech"


def heal(folder) -> list:
    """Capture production's failing log and run the loop until it is idle; the log's events."""
    settings = parse_settings(fake_vllm_deployment("speech", scenario=SCENARIO,
                                                   env={"FAKE_VLLM_LINE_DELAY": "0", "FAKE_VLLM_TOKEN_DELAY": "0"}))
    edges = build(settings)
    clock = StepClock()
    text = simulate(load_scenario(SCENARIO)).log_text
    with open_store(folder / "log.db", create=True) as store:
        loop.capture(store, edges["speech"], text, IncidentSource(kind="file", path="vllm.log"), clock)
        loop.run(store, settings, edges, clock=clock)
        return list(store.read())


def one(events: list, kind: str):
    (found,) = [r.event for r in events if r.type == kind]
    return found


def test_a_heal_that_needs_more_than_the_seed_promotes_in_two_canaries_where_blind_ranking_needs_three(
        tmp_path, monkeypatch):
    (tmp_path / "ranked").mkdir()
    ranked = heal(tmp_path / "ranked")
    with monkeypatch.context() as blinded:  # the same heal with a calibration that never says anything
        blinded.setattr(CalibratedPredictor, "predict", lambda self, config, production: Prediction(passes=None))
        (tmp_path / "blind").mkdir()
        blind = heal(tmp_path / "blind")

    counts = (one(ranked, "RunFinished").canaries, one(blind, "RunFinished").canaries)
    assert counts == (2, 3)
    assert one(ranked, "RunFinished").outcome == one(blind, "RunFinished").outcome == "promoted"

    seed, second = [r.event for r in ranked if r.type == "CandidateProposed"]
    assert seed.origin == "seed" and seed.changes == {"gpu_memory_utilization": [0.9, 0.6]}
    assert second.reason.startswith("predicted to start (calibrated from vLLM's printed numbers): the nearest of ")
    assert second.config == seed.config.changed(gpu_memory_utilization=0.65)
    # the prediction the ranking rested on is recorded before the canary, and held
    predicted = [r.event for r in ranked if r.type == "CanaryPredicted"][-1]
    measured = [r.event.measurements for r in ranked if r.type == "CanaryCompleted"][-1]
    assert predicted.candidate_id == second.candidate_id and predicted.starts is True
    assert measured.started and predicted.low_tokens <= measured.kv_cache_tokens <= predicted.high_tokens
    assert one(ranked, "PromotionProposed").config == second.config

    # blind, the nearest config came second and failed under load before a third passed
    blind_candidates = [r.event for r in blind if r.type == "CandidateProposed"]
    assert [c.reason.split(":")[0] for c in blind_candidates[1:]] == ["no prediction", "no prediction"]
    assert blind_candidates[1].config != second.config

