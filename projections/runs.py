"""Runs: every tuning run, its candidates and what became of each; and what is known to fail.

This is the read model behind `selfheal history` and `selfheal show`, and behind the
tournament's rule that a configuration that failed in an environment is never tried again.
"""
from __future__ import annotations

from datetime import datetime

import msgspec

from selfheal.eventstore.store import Recorded
from selfheal.projections.base import Projection
from selfheal.schemas.events import CanaryMeasurements
from selfheal.schemas.serving import ServingConfig


class CandidateSummary(msgspec.Struct, gc=False):  # a read model holds no cycles: not tracked
    candidate_id: str
    config: ServingConfig
    origin: str
    rank: int
    changes: dict
    predicted: float | None = None
    preflight: str | None = None
    preflight_reason: str = ""
    canary: CanaryMeasurements | None = None
    simulated: bool = False
    passed: bool | None = None
    fitness: float | None = None
    reason: str = ""

    @property
    def outcome(self) -> str:
        if self.preflight == "rejected":
            return "rejected in pre-flight"
        if self.passed is None:
            return "pending"
        if self.passed:
            return "passed"
        return self.reason or "failed"


class RunSummary(msgspec.Struct, gc=False):  # a read model holds no cycles: not tracked
    run_id: str
    intent_id: str
    deployment: str
    correlation_id: str | None
    status: str  # refused | running | promoted | escalated
    requested_at: datetime
    mode: str = ""
    environment: str = ""
    current: ServingConfig | None = None
    candidates: list[CandidateSummary] = []
    reason: str = ""
    next_allowed_at: datetime | None = None
    finished_at: datetime | None = None
    promotion_id: str | None = None
    promoted: ServingConfig | None = None
    #: the fleet node whose runner started or refused the run ("" before nodes were recorded)
    node: str = ""

    def candidate(self, candidate_id: str) -> CandidateSummary | None:
        for c in self.candidates:
            if c.candidate_id == candidate_id:
                return c
        return None

    @property
    def canaries(self) -> int:
        return sum(1 for c in self.candidates if c.canary is not None)


class Runs(msgspec.Struct):
    by_id: dict[str, RunSummary] = {}
    order: list[str] = []
    #: environment -> configs (as dicts) that failed a canary there
    failed_configs: dict[str, list[ServingConfig]] = {}

    def known_failure(self, environment: str, config: ServingConfig) -> bool:
        return config in self.failed_configs.get(environment, ())


class RunsProjection(Projection[Runs]):
    name = "runs"
    types = frozenset({"RunStarted", "RunRefused", "RunFinished", "CandidateProposed", "PreflightPassed",
                       "PreflightRejected", "CanaryCompleted", "CandidateScored", "PromotionProposed",
                       "EscalationRaised"})

    def initial(self) -> Runs:
        return Runs()

    def apply(self, state: Runs, event: Recorded) -> Runs:
        e = event.event
        kind = event.type
        shared = self.shared
        if kind in ("RunStarted", "RunRefused"):
            run = RunSummary(run_id=e.run_id, intent_id=e.intent_id, deployment=shared[e.deployment],
                             correlation_id=event.correlation_id, requested_at=event.occurred,
                             status="running" if kind == "RunStarted" else "refused", node=shared[e.node])
            if kind == "RunStarted":
                run.mode, run.environment, run.current = shared[e.mode], shared[e.environment], shared[e.current]
            else:
                run.reason, run.next_allowed_at = shared[e.reason], e.next_allowed_at
            state.by_id[e.run_id] = run
            state.order.append(e.run_id)
            return state
        run = state.by_id.get(e.run_id) if e.run_id else None
        if run is None:
            return state
        if kind == "CandidateProposed":
            run.candidates.append(CandidateSummary(candidate_id=e.candidate_id, config=shared[e.config],
                                                   origin=shared[e.origin], rank=e.rank, changes=shared.json(e.changes),
                                                   predicted=e.predicted))
        elif kind == "RunFinished":
            run.status, run.finished_at = shared[e.outcome], event.occurred
        elif kind == "PromotionProposed":
            run.promotion_id, run.promoted = e.promotion_id, shared[e.config]
        elif kind == "EscalationRaised":
            run.reason = shared[e.reason]
        else:
            candidate = run.candidate(e.candidate_id)
            if candidate is None:
                return state
            if kind == "PreflightPassed":
                candidate.preflight = "passed"
            elif kind == "PreflightRejected":
                candidate.preflight, candidate.preflight_reason = "rejected", shared[e.reason]
            elif kind == "CanaryCompleted":
                candidate.canary, candidate.simulated = shared[e.measurements], e.simulated
            elif kind == "CandidateScored":
                candidate.passed, candidate.fitness, candidate.reason = e.passed, e.fitness, shared[e.reason]
                if not e.passed and candidate.canary is not None:
                    state.failed_configs.setdefault(run.environment, []).append(candidate.config)
        return state
