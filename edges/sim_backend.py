"""The `sim` canary backend and predictor: vLLM's memory model on a scenario file.

Results are marked simulated; they can inform a promotion but never a production commit.
On the simulator the predictor and the canary share one model, so its predictions are
exact there; the canary still runs, because on real GPUs the two differ. A deployment's
canary and predictor share one LoadMemo: one model, so a load phase either has scheduled
is the other's too.
"""
from __future__ import annotations

from datetime import datetime

from selfheal.handlers.ports import CanaryOutcome, Prediction, measurements_of
from selfheal.edges.sim import simulate
from selfheal.schemas.scenario import Scenario
from selfheal.handlers.models.scoring import score
from selfheal.handlers.models.serving import LoadMemo
from selfheal.schemas.serving import ServingConfig


def with_symptoms(result) -> str:
    """The server's log, then what the /metrics watcher reported of it: the output the observer
    reads of a simulated server, in production (the demo) and in a canary alike."""
    if not result.metrics_symptoms:
        return result.log_text
    return result.log_text + "".join(f"{line}\n" for line in result.metrics_symptoms)


class SimCanaryBackend:
    name = "sim"
    simulated = True

    def __init__(self, scenario: Scenario, loads: LoadMemo | None = None):
        self.scenario = scenario
        self.loads = loads

    def run(self, config: ServingConfig, started_at: datetime, on_launch=None, *, canary_id=None) -> CanaryOutcome:
        result = simulate(self.scenario, config, loads=self.loads)
        return CanaryOutcome(
            measurements=measurements_of(result), log_text=with_symptoms(result),
            command=["simulate", self.scenario.name, *config.cli_args()],
            # the simulated duration stays in the measurements (duration_s): added to the event's
            # time it would date the canary's end after the moment it was recorded (issue 16.3)
            finished_at=None,
        )


class SimPredictor:
    def __init__(self, scenario: Scenario, margin_gib: float, loads: LoadMemo | None = None):
        self.scenario = scenario
        self.margin_gib = margin_gib
        self.loads = LoadMemo(scenario) if loads is None else loads

    def predict(self, config: ServingConfig, production: ServingConfig) -> Prediction:
        result = simulate(self.scenario, config, render=False, loads=self.loads)
        verdict = score(measurements_of(result), self.margin_gib, config, production)
        return Prediction(passes=verdict.passed, fitness=verdict.fitness, failure_kind=result.failure_kind)
