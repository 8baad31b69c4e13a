"""Records what the calibrated predictor expects of each canary before it runs (issue 15.5).

A reactor: the facts come from the log (projections/predictions.py: production's failing start,
earlier canaries' logs and measurements), the model is pure (handlers/models/calibration.py),
so a replay of the same log records the same CanaryPredicted. It answers CanaryStarted and is
offered it before the canary activity (handlers/flow.LOOP), so the prediction is in the log
before anything is measured. Simulated canaries are left to the simulator, their own predictor,
unless `simulated` is set (a test of the calibration on the simulator's printed numbers).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

from selfheal.eventstore.store import Recorded
from selfheal.handlers.models.calibration import MODEL, Calibration, StartFacts, calibrate, predict
from selfheal.handlers.ports import NoPredictor, Prediction
from selfheal.handlers.runtime import Emitted, Reactor
from selfheal.projections.base import View
from selfheal.projections.predictions import PredictionsState
from selfheal.schemas.events import CanaryPredicted, CanaryStarted
from selfheal.schemas.serving import ServingConfig


def _facts(starts) -> list[StartFacts]:
    return [StartFacts(source=s.incident_id, config=s.config, numbers=dict(s.numbers),
                       measured_tokens=s.measured_tokens) for s in starts if s.config is not None]


def calibration_facts(state: PredictionsState, run_id: str) -> list[StartFacts]:
    """The starts a prediction in `run_id` is calibrated from (their figures: the observer's `accounting`)."""
    return _facts(state.starts(run_id))


def own_or_calibrated(own, view: View, calibrated: Callable[[], "CalibratedPredictor"]):
    """The deployment's own predictor (the simulator for a sim deployment); a real deployment has
    none (NoPredictor) and gets the one calibrated from what vLLM printed (issue 15.5), which
    `calibrated` builds: the intent from the failure it reads, the tournament from its run."""
    if not isinstance(own, NoPredictor) or "predictions" not in view.states:
        return own
    return calibrated()


class PredictCanary(Reactor):
    """Records the calibrated prediction of a canary's KV cache before the canary runs."""

    name = "predict-canary"
    subscribes_to = (CanaryStarted,)
    emits = (CanaryPredicted,)

    def __init__(self, deployments: dict, simulated: bool = False):
        self.deployments = deployments
        self.simulated = simulated

    def react(self, event: Recorded, view: View) -> Emitted:
        e = event.event
        if e.simulated and not self.simulated:
            return ()
        state: PredictionsState = view["predictions"]
        run = view["runs"].by_id.get(e.run_id)
        facts = state.runs.get(e.run_id)
        if run is None or facts is None or run.deployment not in self.deployments:
            return ()
        candidate = run.candidate(e.candidate_id)
        if candidate is None:
            return ()
        starts = calibration_facts(state, e.run_id)
        errors = state.errors(facts.deployment, facts.environment)
        made = predict(calibrate(starts, facts.device_total_gib), candidate.config, errors)
        predicted = CanaryPredicted(
            run_id=e.run_id, candidate_id=e.candidate_id, deployment=run.deployment, config=candidate.config,
            kv_cache_tokens=made.kv_tokens, low_tokens=made.low_tokens, high_tokens=made.high_tokens,
            available_kv_gib=made.kv_gib, band=made.band, starts=made.starts, failure_kind=made.failure_kind,
            reason=made.reason, calibrated_from=[s.source for s in starts], model=MODEL)
        return [(f"run-{e.run_id}", event.follow(predicted, "predicted"))]


class CalibratedPredictor:
    """handlers.ports.Predictor over a calibration: whether a candidate starts, never a fitness
    (the memory model says nothing of throughput), so a search still follows the finding where
    it cannot rule a candidate out. Build one per decision from the log: `from_view`."""

    def __init__(self, calibration: Calibration, errors: Sequence[float] = ()):
        self.calibration, self.errors = calibration, list(errors)

    @classmethod
    def from_view(cls, view: View, run_id: str) -> "CalibratedPredictor":
        state: PredictionsState = view["predictions"]
        facts = state.runs.get(run_id)
        if facts is None:
            return cls(Calibration())
        return cls(calibrate(calibration_facts(state, run_id), facts.device_total_gib),
                   state.errors(facts.deployment, facts.environment))

    @classmethod
    def for_failure(cls, view: View, deployment: str, environment: str, production: StartFacts
                    ) -> "CalibratedPredictor":
        """Before its run starts (the intent deciding on a seed): the failing start the observer
        just read, then this deployment's canaries in this environment, as a run would see them."""
        state: PredictionsState = view["predictions"]
        canaries = _facts(state.canaries.get(f"{deployment}/{environment}", []))
        return cls(calibrate([production, *canaries]), state.errors(deployment, environment))

    @property
    def key(self) -> tuple:
        """What its predictions depend on beside the config: a cache of them keys on this too,
        as a canary measured since changes the calibration."""
        return tuple(self.calibration.sources), tuple(self.errors)

    def predict(self, config: ServingConfig, production: ServingConfig) -> Prediction:
        made = predict(self.calibration, config, self.errors)
        return Prediction(passes=made.starts, fitness=None, failure_kind=made.failure_kind)
