"""Alerts: raised for every escalation, lapsed approval, failed verification and rollback,
then delivered to the deployment's sinks, every attempt recorded.

Repeats of one alert (same fingerprint) inside the grouping window are held back; the next
delivery after the window carries their count, so a flapping server pages once per window.
"""
from __future__ import annotations

from datetime import timedelta

from selfheal.eventstore.store import Recorded, derived_id
from selfheal.handlers.runtime import Activity, Emitted, Progress, Reactor
from selfheal.projections.base import View
from selfheal.schemas.fingerprints import alert_fingerprint
from selfheal.schemas.events import (
    AlertDelivered, AlertRaised, DeliveryAttempt, EscalationRaised, PromotionLapsed, RolledBack, VerificationFinished,
)


class RaiseAlert(Reactor):
    """Escalations, lapsed approvals, failed verifications and rollbacks become alerts."""

    name = "alert-raise"
    subscribes_to = (EscalationRaised, PromotionLapsed, VerificationFinished, RolledBack)
    emits = (AlertRaised,)

    def react(self, event: Recorded, view: View) -> Emitted:
        e, t = event.event, event.type
        if t == "EscalationRaised":
            # the retry hint (when a repeat folds in, how to force a retry) rides along, outside the key
            kind, deployment, summary = "escalation", e.deployment, e.reason + (f"; {e.retry}" if e.retry else "")
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
                            summary=summary, fingerprint=alert_fingerprint(deployment, kind, key), evidence=evidence)
        return [(f"alerts-{deployment}", event.follow(alert, self.name))]


class DeliverAlert(Activity):
    """Delivers an alert to the deployment's sinks, repeats grouped per window."""

    name = "alert-deliver"
    port = "alerts"
    subscribes_to = (AlertRaised,)
    emits = (AlertDelivered,)

    def __init__(self, deployments: dict, group_minutes: float):
        self.deployments = deployments
        self.window = timedelta(minutes=group_minutes)

    def perform(self, event: Recorded, view: View, progress: Progress) -> Emitted:
        e = event.event
        edges = self.deployments.get(e.deployment)
        if edges is None or not edges.settings.alerts or edges.alerts is None:
            return ()
        alerts = view["alerts"]
        last = alerts.last_delivered.get(e.fingerprint)
        if last is not None and event.occurred - last < self.window:
            return ()  # held back: the next delivery after the window carries the count
        count = max(1, alerts.held.get(e.fingerprint, 1))
        out = []
        for index, (sink, result) in enumerate(edges.alerts.deliver(e, event.occurred, count)):
            attempts = [DeliveryAttempt(number=a.number, status=a.status, error=a.error, duration_s=a.duration_s)
                        for a in result.attempts]
            delivered = AlertDelivered(alert_id=e.alert_id, sink=sink, ok=result.ok, count=count,
                                       attempts=attempts, detail=result.detail)
            out.append((f"alerts-{e.deployment}", event.follow(delivered, f"delivered-{index}")))
        return out
