"""Alerts: what was raised, what reached whom, and which repeats were folded together."""
from __future__ import annotations

from datetime import datetime

import msgspec

from selfheal.eventstore.store import Recorded
from selfheal.projections.base import Projection


class AlertSummary(msgspec.Struct, gc=False):  # a read model holds no cycles: not tracked
    alert_id: str
    deployment: str
    kind: str
    summary: str
    fingerprint: str
    raised_at: datetime
    evidence: dict[str, str]
    deliveries: list[dict] = []


class Alerts(msgspec.Struct):
    by_id: dict[str, AlertSummary] = {}
    order: list[str] = []
    #: fingerprint -> time of the last delivery that reached a sink, and repeats held back since
    last_delivered: dict[str, datetime] = {}
    held: dict[str, int] = {}


class AlertsProjection(Projection[Alerts]):
    name = "alerts"
    types = frozenset({"AlertRaised", "AlertDelivered"})

    def initial(self) -> Alerts:
        return Alerts()

    def apply(self, state: Alerts, event: Recorded) -> Alerts:
        e = event.event
        shared = self.shared
        if event.type == "AlertRaised":
            state.by_id[e.alert_id] = AlertSummary(alert_id=e.alert_id, deployment=shared[e.deployment],
                                                   kind=shared[e.kind], summary=shared[e.summary],
                                                   fingerprint=shared[e.fingerprint], raised_at=event.occurred,
                                                   evidence=dict(e.evidence))  # ids of its own: nothing to share
            state.order.append(e.alert_id)
            state.held[e.fingerprint] = state.held.get(e.fingerprint, 0) + 1
            return state
        alert = state.by_id.get(e.alert_id)
        if alert is not None:
            alert.deliveries.append({"sink": shared[e.sink], "ok": e.ok, "count": e.count,
                                     "attempts": len(e.attempts), "detail": shared[e.detail]})
            if e.ok:  # a delivery nobody received starts no window: the next repeat goes out again
                state.last_delivered[alert.fingerprint] = event.occurred
                state.held[alert.fingerprint] = 0
        return state
