"""Alerts on their own: alert-raise turns escalations, lapses, failed verifications and
rollbacks into AlertRaised; alert-deliver hands them to fake sinks, holding repeats back."""
from __future__ import annotations

from dataclasses import dataclass, field

from selfheal.eventstore import derived_id
from selfheal.handlers.alerting import DeliverAlert, RaiseAlert
from selfheal.schemas.events import (
    AlertRaised, CandidateEvidence, EscalationRaised, PromotionLapsed, PromotionProposed, RolledBack,
    VerificationFinished,
)
from tests.handlers.given_when_then import DEPLOYMENT, PRODUCTION, Given, T0, at, deployment, settings

STREAM = f"alerts-{DEPLOYMENT}"


def escalation(reason: str = "tournament budget of 6 candidates spent (2 candidates: ...)") -> EscalationRaised:
    return EscalationRaised(run_id="r1", intent_id="i1", deployment=DEPLOYMENT, reason=reason,
                            candidates=[CandidateEvidence(candidate_id="c1234567890", config=PRODUCTION,
                                                          outcome="did not start: no_kv_cache_memory")])


# -- alert-raise -----------------------------------------------------------------------------

def test_an_escalation_becomes_an_alert_with_its_evidence():
    given = Given(("run-r1", escalation()))
    then = given.when(RaiseAlert())
    assert then.types == ["AlertRaised"] and then.streams == [STREAM]
    alert = then.events[0]
    assert alert.alert_id == derived_id(given.last.event_id, "alert")
    assert (alert.kind, alert.deployment) == ("escalation", DEPLOYMENT)
    assert alert.summary == "tournament budget of 6 candidates spent (2 candidates: ...)"
    assert alert.evidence == {"intent_id": "i1", "run_id": "r1",
                              "candidates": "c1234567: did not start: no_kv_cache_memory"}
    assert alert.fingerprint.startswith("alert:")
    then.caused(T0)


def test_escalations_for_the_same_reason_share_a_fingerprint():
    one = Given(("run-r1", escalation("no untried configuration (1 candidates: a)"))).when(RaiseAlert())
    two = Given(("run-r2", escalation("no untried configuration (3 candidates: b, c, d)"))).when(RaiseAlert())
    other = Given(("run-r3", escalation("tournament budget of 6 candidates spent (6 candidates)"))).when(RaiseAlert())
    assert one.one("AlertRaised").fingerprint == two.one("AlertRaised").fingerprint
    assert one.one("AlertRaised").fingerprint != other.one("AlertRaised").fingerprint


def test_a_failed_verification_is_an_alert_and_a_healthy_one_is_not():
    failed = VerificationFinished(commit_id="k2345678", deployment=DEPLOYMENT, purpose="commit", healthy=False,
                                  detail="HTTP 502")
    then = Given((f"deployment-{DEPLOYMENT}", failed, at(minutes=3))).when(RaiseAlert())
    alert = then.one("AlertRaised")
    assert alert.kind == "verification_failed"
    assert alert.summary == "commit k2345678: the server did not come back healthy: HTTP 502"
    assert alert.evidence == {"commit_id": "k2345678", "purpose": "commit", "detail": "HTTP 502"}
    then.caused(at(minutes=3))
    healthy = VerificationFinished(commit_id="k2", deployment=DEPLOYMENT, purpose="commit", healthy=True)
    assert Given((f"deployment-{DEPLOYMENT}", healthy)).when(RaiseAlert()).emitted == []


def test_a_rollback_is_an_alert():
    rolled = RolledBack(commit_id="k2", deployment=DEPLOYMENT, restored_version=1, reason="verification failed: 502")
    alert = Given((f"deployment-{DEPLOYMENT}", rolled)).when(RaiseAlert()).one("AlertRaised")
    assert (alert.kind, alert.summary) == ("rolled_back", "rolled back to v1: verification failed: 502")
    assert alert.evidence == {"commit_id": "k2", "restored_version": "1"}


def test_a_lapsed_promotion_is_an_alert_for_its_deployment():
    proposed = PromotionProposed(promotion_id="p1234567890", run_id="r1", deployment=DEPLOYMENT, candidate_id="c1",
                                 config=PRODUCTION, previous=PRODUCTION, fitness=1.0, evidence_hash="sha256:e",
                                 simulated=False, requires_approval=True)
    given = Given(("promotion-p1", proposed),
                  ("promotion-p1", PromotionLapsed(promotion_id="p1234567890", reason="not approved within 24 h"),
                   at(hours=25)))
    then = given.when(RaiseAlert())
    assert then.streams == [STREAM]
    alert = then.one("AlertRaised")
    assert (alert.kind, alert.deployment) == ("promotion_lapsed", DEPLOYMENT)
    assert alert.summary == "promotion p1234567 lapsed: not approved within 24 h"
    then.caused(at(hours=25))


# -- alert-deliver ----------------------------------------------------------------------------

WITH_SINK = settings(extra=f'[[deployments.{DEPLOYMENT}.alerts]]\ntype = "jsonl"\npath = "/var/log/alerts.jsonl"\n')


@dataclass
class Attempt:
    number: int
    status: int | None = None
    error: str | None = None
    duration_s: float = 0.01


@dataclass
class Delivery:
    ok: bool
    attempts: list = field(default_factory=list)
    detail: str = ""


class Sinks:
    """Fake AlertSinks: a file that takes everything and a webhook that failed twice then answered."""

    def __init__(self):
        self.calls = []

    def deliver(self, alert, raised_at, count):
        self.calls.append((alert.alert_id, raised_at, count))
        return [("jsonl:/var/log/alerts.jsonl", Delivery(True, [Attempt(1)], "appended")),
                ("webhook:https://hooks.example/x", Delivery(True, [Attempt(1, 503), Attempt(2, None, "timeout"),
                                                                    Attempt(3, 200)], "HTTP 200"))]


def alert(alert_id: str, fingerprint: str = "alert:f1") -> AlertRaised:
    return AlertRaised(alert_id=alert_id, deployment=DEPLOYMENT, kind="verification_failed", summary="down",
                       fingerprint=fingerprint)


def deliver(sinks: Sinks, settings_=WITH_SINK) -> DeliverAlert:
    return DeliverAlert(deployment(settings_, alerts=sinks), group_minutes=60)


def test_an_alert_is_delivered_to_every_sink_with_every_attempt():
    sinks = Sinks()
    then = Given((STREAM, alert("a1"), at(minutes=1))).when(deliver(sinks))
    assert sinks.calls == [("a1", at(minutes=1), 1)]
    assert then.types == ["AlertDelivered", "AlertDelivered"] and then.streams == [STREAM, STREAM]
    to_file, to_hook = then.events
    assert (to_file.alert_id, to_file.sink, to_file.ok, to_file.count, to_file.detail) == (
        "a1", "jsonl:/var/log/alerts.jsonl", True, 1, "appended")
    assert [(a.number, a.status, a.error) for a in to_hook.attempts] == [(1, 503, None), (2, None, "timeout"),
                                                                          (3, 200, None)]
    then.caused(at(minutes=1))


def test_a_repeat_inside_the_window_is_held_and_the_next_delivery_carries_the_count():
    sinks = Sinks()
    handler = deliver(sinks)
    given = Given((STREAM, alert("a1"), at(minutes=0)))
    given.when(handler).record()
    given.record(STREAM, alert("a2"), at(minutes=30))
    assert given.when(handler).emitted == [] and [c[0] for c in sinks.calls] == ["a1"]  # held back
    given.record(STREAM, alert("a3"), at(minutes=61))
    then = given.when(handler)
    assert sinks.calls[-1] == ("a3", at(minutes=61), 2)  # itself and the one held back
    assert [e.count for e in then.events] == [2, 2]
    then.caused(at(minutes=61))


def test_another_alert_inside_the_window_is_not_held():
    sinks = Sinks()
    given = Given((STREAM, alert("a1")))
    given.when(deliver(sinks)).record()
    given.record(STREAM, alert("b1", fingerprint="alert:other"), at(minutes=5))
    assert given.when(deliver(sinks)).types == ["AlertDelivered", "AlertDelivered"]


def test_a_deployment_without_sinks_delivers_nothing():
    sinks = Sinks()
    assert Given((STREAM, alert("a1"))).when(deliver(sinks, settings())).emitted == []
    assert sinks.calls == []


class FailingSinks(Sinks):
    """Every sink is down: each gives up after its retries."""

    def deliver(self, alert, raised_at, count):
        self.calls.append((alert.alert_id, raised_at, count))
        return [("webhook:https://hooks.example/x", Delivery(False, [Attempt(n, 503) for n in (1, 2, 3)], "HTTP 503"))]


def test_a_failed_delivery_is_recorded_with_every_attempt():
    then = Given((STREAM, alert("a1"))).when(deliver(FailingSinks()))
    delivered = then.one("AlertDelivered")
    assert (delivered.ok, delivered.detail, [a.status for a in delivered.attempts]) == (False, "HTTP 503",
                                                                                     [503, 503, 503])


def test_a_delivery_that_never_got_through_does_not_hold_back_the_repeat():
    sinks = FailingSinks()
    given = Given((STREAM, alert("a1")))
    given.when(deliver(sinks)).record()
    given.record(STREAM, alert("a2"), at(minutes=5))
    then = given.when(deliver(sinks))
    assert then.types == ["AlertDelivered"]
    assert then.one("AlertDelivered").count == 2  # the repeat carries the alert nobody received
