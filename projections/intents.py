"""Intents: what selfheal meant to do about each observation, and how each one ended."""
from __future__ import annotations

from datetime import datetime, timedelta

import msgspec

from selfheal.eventstore.store import Recorded
from selfheal.projections.base import Projection


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

    def recent(self, deployment: str, fingerprint: str, now: datetime, window: timedelta) -> IntentSummary | None:
        """The intent already raised for this fingerprint inside the window, if any."""
        intent_id = self.latest.get(f"{deployment}\x1f{fingerprint}")
        if intent_id is None:
            return None
        intent = self.by_id[intent_id]
        return intent if now - intent.raised_at < window else None


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
