"""Intents: what selfheal meant to do about each observation, and how each one ended.

Dedupe reads event times only, and a clock can jump: an intent dated after the observation
that follows it in the log (by more than FUTURE_TOLERANCE) is not taken as fresh; it is
treated as expired, so the failure raises an intent of its own (which the gate's rate limit
still governs) instead of folding into one whose window nobody can place.
"""
from __future__ import annotations

from datetime import datetime, timedelta

import msgspec

from selfheal.eventstore.store import Recorded
from selfheal.projections.base import Projection


#: how far an intent may be dated after a later observation and still count as raised at it:
#: two watchers that each read the clock, then append, can land a moment out of order
FUTURE_TOLERANCE = timedelta(seconds=60)


class IntentSummary(msgspec.Struct, gc=False):  # a read model holds no cycles: not tracked
    intent_id: str
    deployment: str
    kind: str
    action: str
    fingerprint: str
    raised_at: datetime
    incident_id: str
    seed_fix: dict
    status: str = "open"
    outcome: str | None = None
    run_id: str | None = None
    repeats: int = 0
    reason: str = ""


class Intents(msgspec.Struct):
    by_id: dict[str, IntentSummary] = {}
    #: (deployment, fingerprint) -> the intent most recently raised for it
    latest: dict[str, str] = {}

    def latest_for(self, deployment: str, fingerprint: str) -> IntentSummary | None:
        """The intent most recently raised for this fingerprint, whenever."""
        intent_id = self.latest.get(f"{deployment}\x1f{fingerprint}")
        return None if intent_id is None else self.by_id[intent_id]

    def recent(self, deployment: str, fingerprint: str, now: datetime, window: timedelta) -> IntentSummary | None:
        """The intent already raised for this fingerprint inside the window, if any; one dated
        after `now` beyond FUTURE_TOLERANCE is expired, one dated a moment after is of age 0."""
        intent = self.latest_for(deployment, fingerprint)
        if intent is None or future_dated(intent, now):
            return None
        return intent if max(now - intent.raised_at, timedelta(0)) < window else None


def future_dated(intent: IntentSummary, now: datetime) -> bool:
    return intent.raised_at - now > FUTURE_TOLERANCE


class IntentsProjection(Projection[Intents]):
    name = "intents"
    types = frozenset({"IntentRaised", "IntentDeduplicated", "IntentArchived", "RunStarted", "RunRefused"})

    def initial(self) -> Intents:
        return Intents()

    def apply(self, state: Intents, event: Recorded) -> Intents:
        e = event.event
        shared = self.shared
        if event.type == "IntentRaised":
            state.by_id[e.intent_id] = IntentSummary(
                intent_id=e.intent_id, deployment=shared[e.deployment], kind=shared[e.kind], action=shared[e.action],
                fingerprint=shared[e.fingerprint], raised_at=event.occurred, incident_id=e.incident_id,
                seed_fix=shared.json(e.seed_fix), reason=shared[e.reason])
            state.latest[f"{e.deployment}\x1f{e.fingerprint}"] = e.intent_id
            return state
        intent = state.by_id.get(e.intent_id)
        if intent is None:
            return state
        if event.type == "IntentDeduplicated":
            intent.repeats += 1
        elif event.type in ("RunStarted", "RunRefused"):
            intent.run_id = e.run_id
        else:
            intent.status, intent.outcome = "archived", shared[e.outcome]
            intent.run_id = e.run_id or intent.run_id
        return state
