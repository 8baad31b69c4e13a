"""What an operator's Prometheus wants to know of the loop, folded from the log (issue 18.1).

Counts only: the labels are the events' own words (a finding's kind, a run's outcome, a
sink's name), so the series are few and bounded by the vocabulary of schemas/events.py, not by
ids. The edge that serves them (edges/metrics_server.py) adds what needs the clock or the
store's checkpoints: the age of the last event and the handlers' lag.
"""
from __future__ import annotations

from typing import get_args, get_type_hints

import msgspec

from selfheal.eventstore.store import Recorded
from selfheal.projections.base import Projection
from selfheal.projections.promotions import Promotions, PromotionsProjection
from selfheal.schemas.events import AlertRaised, RunFinished

#: the values a labelled counter can take, known before any is seen: each starts at 0, because
#: Prometheus' increase() and rate() see nothing in a series' first sample, so an alert on the
#: first escalation (increase(selfheal_runs_total{outcome="escalated"}[1h]) > 0) would never
#: fire if the series appeared with it at 1
RUN_OUTCOMES = (*get_args(get_type_hints(RunFinished)["outcome"]), "refused")
ALERT_KINDS = get_args(get_type_hints(AlertRaised)["kind"])
CANARY_RESULTS = ("passed", "failed_startup", "failed_load")


class OperatorMetrics(msgspec.Struct):
    events_total: int = 0
    last_position: int = 0
    last_recorded_at: str | None = None
    incidents_total: int = 0
    #: a finding's kind (ObservationMade), or "unmatched" (IncidentUnmatched)
    incidents_by_kind: dict[str, int] = {}
    runs_started: int = 0
    #: promoted | escalated (RunFinished), refused (RunRefused)
    runs_by_outcome: dict[str, int] = {}
    #: (backend, result): passed | failed_startup | failed_load
    canaries_by_result: dict[tuple[str, str], int] = {}
    alerts_by_kind: dict[str, int] = {}
    #: (sink, ok) -> deliveries; a grouped delivery counts each alert it carried
    deliveries: dict[tuple[str, bool], int] = {}
    commits: int = 0
    rollbacks: int = 0
    promotions: Promotions = msgspec.field(default_factory=Promotions)

    def promotions_waiting(self) -> int:
        return len(self.promotions.waiting())


def _bump(counts: dict, key) -> None:
    counts[key] = counts.get(key, 0) + 1


def canary_result(measurements) -> str:
    if not measurements.started:
        return "failed_startup"
    return "passed" if measurements.passed_load else "failed_load"


class OperatorMetricsProjection(Projection[OperatorMetrics]):
    name = "operator_metrics"
    types = None  # every event counts toward events_total and the last event's time

    def __init__(self) -> None:
        super().__init__()
        self._promotions = PromotionsProjection()

    def initial(self) -> OperatorMetrics:
        return OperatorMetrics(promotions=self._promotions.initial(), runs_by_outcome=dict.fromkeys(RUN_OUTCOMES, 0),
                               alerts_by_kind=dict.fromkeys(ALERT_KINDS, 0))

    def apply(self, state: OperatorMetrics, event: Recorded) -> OperatorMetrics:
        state.events_total += 1
        state.last_position = event.position
        state.last_recorded_at = event.recorded_at
        kind = event.type
        e = event.event
        if kind in self._promotions.types:
            state.promotions = self._promotions.apply(state.promotions, event)
        if kind == "IncidentCaptured":
            state.incidents_total += 1
        elif kind == "ObservationMade":
            _bump(state.incidents_by_kind, e.finding.kind)
        elif kind == "IncidentUnmatched":
            _bump(state.incidents_by_kind, "unmatched")
        elif kind == "RunStarted":
            state.runs_started += 1
        elif kind == "RunFinished":
            _bump(state.runs_by_outcome, e.outcome)
        elif kind == "RunRefused":
            _bump(state.runs_by_outcome, "refused")
        elif kind == "CanaryCompleted":  # a backend's every result from its first canary on (see RUN_OUTCOMES)
            for result in CANARY_RESULTS:
                state.canaries_by_result.setdefault((e.backend, result), 0)
            _bump(state.canaries_by_result, (e.backend, canary_result(e.measurements)))
        elif kind == "AlertRaised":
            _bump(state.alerts_by_kind, e.kind)
        elif kind == "AlertDelivered":
            state.deliveries.setdefault((e.sink, not e.ok), 0)  # a sink's failures from its first delivery on
            key = (e.sink, e.ok)
            state.deliveries[key] = state.deliveries.get(key, 0) + max(e.count, 1)
        elif kind == "BaselineCommitted":
            state.commits += 1
        elif kind == "RolledBack":
            state.rollbacks += 1
        return state
