"""Predicted against measured (issue 15.5): the calibrated predictor's facts and its record.

Two things, folded from the log alone:

- the facts the predictor is calibrated from: for each run, the production start that failed
  (its intent's `accounting`, the observer's reading of the incident) and every canary of its
  deployment in the same environment (the config it ran, the figures its log printed, the KV
  tokens its backend measured: CanaryCompleted). Numbers only, never a log's text, which is
  sealed and may be forgotten; and only from events other read models decode already, so the
  fold decodes no incident or observation body (tests/projections/test_one_pass.py).
- every CanaryPredicted beside its canary's measurements: `rows`, `errors`, `table`.
"""
from __future__ import annotations

import msgspec

from selfheal.eventstore.store import Recorded
from selfheal.projections.base import Projection
from selfheal.schemas.serving import ServingConfig

#: the canaries kept per environment, newest last, and the intents waiting for a run
KEEP_CANARIES = 16
KEEP_INTENTS = 256


class Start(msgspec.Struct, kw_only=True):
    """One start of a deployment: what its log printed and the config it ran."""

    incident_id: str
    config: ServingConfig | None = None
    numbers: dict[str, float] = {}
    measured_tokens: int = 0
    run_id: str = ""
    candidate_id: str = ""


class RunFacts(msgspec.Struct, kw_only=True):
    deployment: str
    environment: str
    production: Start | None = None
    #: the smallest device total pre-flight's NVML snapshot read in this run (GiB)
    device_total_gib: float | None = None


class Row(msgspec.Struct, kw_only=True):
    """A prediction and, once its canary completed, what it measured."""

    run_id: str
    candidate_id: str
    deployment: str
    environment: str
    config: ServingConfig
    predicted_tokens: int | None = None
    low_tokens: int | None = None
    high_tokens: int | None = None
    band: float = 0.0
    predicted_starts: bool | None = None
    predicted_kv_gib: float | None = None
    measured_tokens: int | None = None
    measured_kv_gib: float | None = None
    started: bool | None = None
    failure_kind: str | None = None
    position: int = 0

    @property
    def error(self) -> float | None:
        """(predicted - measured) / measured, where both are known."""
        if not self.predicted_tokens or not self.measured_tokens:
            return None
        return (self.predicted_tokens - self.measured_tokens) / self.measured_tokens

    @property
    def within_band(self) -> bool | None:
        if self.measured_tokens is None or self.low_tokens is None or self.high_tokens is None or not self.started:
            return None
        return self.low_tokens <= self.measured_tokens <= self.high_tokens


class PredictionsState(msgspec.Struct, kw_only=True):
    #: intent id -> (incident id, production config)
    intents: dict[str, Start] = {}
    runs: dict[str, RunFacts] = {}
    #: candidate id -> its config
    candidates: dict[str, ServingConfig] = {}
    #: "deployment/environment" -> its canaries' starts, newest last
    canaries: dict[str, list[Start]] = {}
    #: candidate id -> its prediction and measurement
    rows: dict[str, Row] = {}

    def starts(self, run_id: str) -> list[Start]:
        """What a prediction in this run is calibrated from: production's failing start, then the
        canaries of its deployment in its environment, oldest first."""
        run = self.runs.get(run_id)
        if run is None:
            return []
        made = [run.production] if run.production is not None and run.production.config is not None else []
        return made + self.canaries.get(f"{run.deployment}/{run.environment}", [])

    def errors(self, deployment: str, environment: str) -> list[float]:
        """The relative errors of this deployment's checked predictions, oldest first."""
        rows = sorted((r for r in self.rows.values() if r.deployment == deployment and r.environment == environment),
                      key=lambda r: r.position)
        return [e for e in (r.error for r in rows) if e is not None]

    def table(self, deployment: str | None = None) -> list[dict]:
        """Predicted against measured, one row per predicted candidate, in log order."""
        rows = sorted((r for r in self.rows.values() if deployment in (None, r.deployment)), key=lambda r: r.position)
        return [{"run_id": r.run_id, "candidate_id": r.candidate_id, "deployment": r.deployment,
                 "config": msgspec.to_builtins(r.config), "predicted_tokens": r.predicted_tokens,
                 "low_tokens": r.low_tokens, "high_tokens": r.high_tokens, "band": r.band,
                 "predicted_starts": r.predicted_starts, "measured_tokens": r.measured_tokens,
                 "started": r.started, "failure_kind": r.failure_kind, "error": r.error,
                 "within_band": r.within_band} for r in rows]


class PredictionsProjection(Projection[PredictionsState]):
    name = "predictions"
    types = frozenset({"IntentRaised", "RunStarted", "CandidateProposed", "CanaryCompleted", "CanaryPredicted",
                       "PreflightPassed", "PreflightRejected"})

    def initial(self) -> PredictionsState:
        return PredictionsState()

    def apply(self, state: PredictionsState, event: Recorded) -> PredictionsState:
        e, kind = event.event, event.type
        if kind == "IntentRaised":
            state.intents[e.intent_id] = Start(incident_id=e.incident_id, config=e.current, numbers=dict(e.accounting))
            while len(state.intents) > KEEP_INTENTS:  # intents that never ran (deduplicated, alerts)
                del state.intents[next(iter(state.intents))]
        elif kind == "RunStarted":
            production = state.intents.pop(e.intent_id, None)
            state.runs[e.run_id] = RunFacts(deployment=e.deployment, environment=e.environment,
                                            production=production)
        elif kind in ("PreflightPassed", "PreflightRejected"):
            run = state.runs.get(e.run_id)
            totals = [g.total_bytes for g in e.snapshot if g.total_bytes > 0]
            if run is not None and totals:
                run.device_total_gib = min(totals) / 2**30
        elif kind == "CandidateProposed":
            state.candidates[e.candidate_id] = e.config
        elif kind == "CanaryPredicted":
            run = state.runs.get(e.run_id)
            state.rows[e.candidate_id] = Row(
                run_id=e.run_id, candidate_id=e.candidate_id, deployment=e.deployment,
                environment=run.environment if run else "", config=e.config, predicted_tokens=e.kv_cache_tokens,
                low_tokens=e.low_tokens, high_tokens=e.high_tokens, band=e.band, predicted_starts=e.starts,
                predicted_kv_gib=e.available_kv_gib, position=event.position)
        elif kind == "CanaryCompleted":
            self._completed(state, e)
        return state

    @staticmethod
    def _completed(state: PredictionsState, e) -> None:
        m = e.measurements
        row = state.rows.get(e.candidate_id)
        if row is not None:
            row.measured_tokens, row.started, row.failure_kind = m.kv_cache_tokens or None, m.started, m.failure_kind
            row.measured_kv_gib = m.available_kv_gib or None
        run, config = state.runs.get(e.run_id), state.candidates.get(e.candidate_id)
        if run is None or config is None:
            return
        start = Start(incident_id=e.log_incident_id or "", config=config, numbers=dict(e.accounting),
                      measured_tokens=m.kv_cache_tokens, run_id=e.run_id, candidate_id=e.candidate_id)
        kept = state.canaries.setdefault(f"{run.deployment}/{run.environment}", [])
        kept.append(start)
        del kept[:-KEEP_CANARIES]
