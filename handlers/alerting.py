"""Alerts: raised for every escalation, lapsed approval, failed verification and rollback,
then delivered to the deployment's sinks, every attempt recorded.

Repeats of one alert (same fingerprint) inside the grouping window are held back; the next
delivery after the window carries their count, so a flapping server pages once per window.
"""
from __future__ import annotations

import hashlib
from datetime import timedelta

from selfheal.eventstore.store import Recorded, derived_id
from selfheal.handlers.runtime import Emitted, Handler
from selfheal.projections.base import View
from selfheal.schemas.events import AlertDelivered, AlertRaised, DeliveryAttempt


def _fingerprint(*parts: str) -> str:
    return "alert:" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


class RaiseAlert(Handler):
    name = "alert-raise"
    subscribes_to = frozenset({"EscalationRaised", "PromotionLapsed", "VerificationFinished", "RolledBack"})

    def handle(self, event: Recorded, view: View) -> Emitted:
        e, t = event.event, event.type
        if t == "EscalationRaised":
            kind, deployment, summary = "escalation", e.deployment, e.reason
            evidence = {"intent_id": e.intent_id, "run_id": e.run_id or "",
                        "candidates": "; ".join(f"{c.candidate_id[:8]}: {c.outcome}" for c in e.candidates)}
            key = e.reason.split("(")[0]
        elif t == "PromotionLapsed":
            promotion = view["promotions"].by_id.get(e.promotion_id)
            deployment = promotion.deployment if promotion else ""
            kind, summary, evidence, key = "promotion_lapsed", f"promotion {e.promotion_id[:8]} lapsed: {e.reason}", \
                {"promotion_id": e.promotion_id}, e.promotion_id
        elif t == "VerificationFinished":
            if e.healthy:
                return ()
            kind, deployment = "verification_failed", e.deployment
            summary = f"{e.purpose} {e.commit_id[:8]}: the server did not come back healthy: {e.detail}"
            evidence, key = {"commit_id": e.commit_id, "purpose": e.purpose, "detail": e.detail}, e.purpose
        else:
            kind, deployment = "rolled_back", e.deployment
            summary = f"rolled back to v{e.restored_version}: {e.reason}"
            evidence, key = {"commit_id": e.commit_id, "restored_version": str(e.restored_version)}, ""
        alert = AlertRaised(alert_id=derived_id(event.event_id, "alert"), deployment=deployment, kind=kind,
                            summary=summary, fingerprint=_fingerprint(deployment, kind, key), evidence=evidence)
        return [(f"alerts-{deployment}", event.follow(alert, self.name))]


class DeliverAlert(Handler):
    name = "alert-deliver"
    subscribes_to = frozenset({"AlertRaised"})

    def __init__(self, deployments: dict, group_minutes: float):
        self.deployments = deployments
        self.window = timedelta(minutes=group_minutes)

    def handle(self, event: Recorded, view: View) -> Emitted:
        from selfheal.edges.alerts import Alert, sink_from_config

        e = event.event
        edges = self.deployments.get(e.deployment)
        if edges is None or not edges.settings.alerts:
            return ()
        alerts = view["alerts"]
        last = alerts.last_delivered.get(e.fingerprint)
        if last is not None and event.occurred - last < self.window:
            return ()  # held back: the next delivery after the window carries the count
        count = max(1, alerts.held.get(e.fingerprint, 1))
        alert = Alert(alert_id=e.alert_id, deployment=e.deployment, kind=e.kind, summary=e.summary,
                      evidence=dict(e.evidence), raised_at=event.occurred, fingerprint=e.fingerprint, count=count)
        out = []
        for index, spec in enumerate(edges.settings.alerts):
            sink = sink_from_config(spec.spec())
            result = sink.deliver(alert)
            attempts = [DeliveryAttempt(number=a.number, status=a.status, error=a.error, duration_s=a.duration_s)
                        for a in result.attempts]
            delivered = AlertDelivered(alert_id=e.alert_id, sink=f"{spec.type}:{index}", ok=result.ok, count=count,
                                       attempts=attempts, detail=result.detail)
            out.append((f"alerts-{e.deployment}", event.follow(delivered, f"delivered-{index}")))
        return out
