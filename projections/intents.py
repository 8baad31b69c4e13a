"""Intents: what selfheal meant to do about each observation, and how each one ended.

Deduplication is by failure, not by deployment (issue 15.7): a repeat folds into an intent only
when it is the same failure (the fingerprint: deployment, failure kind, rule and the config it
failed under) with the same numbers, each number both findings read within TOLERANCE (10%) of
the larger (`same_numbers`), and inside the window. Numbers further apart are another incident
of the same kind (a different request size, another estimated length), whose fix may well be
inside the bounds where the first's was not: it raises its own intent. 10% is the observer's
own safety buffer: two readings closer than it lead to seed fixes at most a step apart. An
incident recorded with `heal --force` (RetryForced, before it in the log) is never folded.

Dedupe reads event times only, and a clock can jump: an intent dated after the observation
that follows it in the log (by more than FUTURE_TOLERANCE) is not taken as fresh; it is
treated as expired, so the failure raises an intent of its own (which the gate's rate limit
still governs) instead of folding into one whose window nobody can place.
"""
from __future__ import annotations

from datetime import datetime, timedelta

import msgspec

from selfheal.eventstore.recorder import utc_iso
from selfheal.eventstore.store import Recorded
from selfheal.projections.base import Projection


#: how far apart two readings of one number may be and still be the same failure, relative to the larger
TOLERANCE = 0.10

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
    #: the finding's numbers, which a repeat must agree with to fold in ({} before they were kept)
    numbers: dict = {}
    #: until when a repeat folds into this intent (None before it was recorded)
    dedupe_until: datetime | None = None


class Intents(msgspec.Struct):
    by_id: dict[str, IntentSummary] = {}
    #: (deployment, fingerprint) -> the intent most recently raised for it
    latest: dict[str, str] = {}
    #: (deployment, fingerprint) -> every intent raised for it, oldest first
    raised: dict[str, list[str]] = {}
    #: incidents recorded with `heal --force`: never folded into an earlier intent
    forced: dict[str, bool] = {}

    def latest_for(self, deployment: str, fingerprint: str) -> IntentSummary | None:
        """The intent most recently raised for this fingerprint, whenever."""
        intent_id = self.latest.get(f"{deployment}\x1f{fingerprint}")
        return None if intent_id is None else self.by_id[intent_id]

    def recent(self, deployment: str, fingerprint: str, now: datetime, window: timedelta,
               numbers: dict | None = None) -> IntentSummary | None:
        """The newest intent raised for this fingerprint inside the window whose numbers agree
        with `numbers` (None: any), if any; one dated after `now` beyond FUTURE_TOLERANCE is
        expired, one dated a moment after is of age 0."""
        key = f"{deployment}\x1f{fingerprint}"
        for intent_id in reversed(self.raised.get(key, ())):
            intent = self.by_id[intent_id]
            if future_dated(intent, now) or max(now - intent.raised_at, timedelta(0)) >= window:
                continue
            if numbers is None or same_numbers(intent.numbers, numbers):
                return intent
        return None

    def is_forced(self, incident_id: str) -> bool:
        """Whether the incident was recorded with `heal --force` (a person's retry)."""
        return incident_id in self.forced


    def apart(self, deployment: str, fingerprint: str, now: datetime, window: timedelta, numbers: dict,
              forced: bool) -> str:
        """Why an intent raised now for this failure is not folded into one inside the window
        ("" when there is none to fold into): a person forced it, or the numbers differ."""
        alike = self.recent(deployment, fingerprint, now, window)
        if alike is None:
            return ""
        if forced:
            return f"forced (heal --force): not folded into intent {alike.intent_id[:8]} of the same failure"
        differ = sorted(k for k in alike.numbers.keys() & numbers.keys()
                        if not same_numbers({k: alike.numbers[k]}, {k: numbers[k]}))
        shown = ", ".join(f"{k} {alike.numbers[k]:g} then {numbers[k]:g}" for k in differ)
        return (f"not folded into intent {alike.intent_id[:8]} of the same kind: its numbers differ by more "
                f"than {TOLERANCE:.0%} ({shown})")


def retry_hint(intent_id: str, until: datetime | None) -> str:
    """What an intent that ended without a promotion tells a person: until when the same failure
    folds into it, and how to retry sooner."""
    when = f"until {utc_iso(until)} " if until is not None else ""  # the log's own spelling of times
    return (f"a repeat of this failure (same kind, numbers within {TOLERANCE:.0%}) {when}folds into intent "
            f"{intent_id[:8]}; to retry sooner: selfheal heal --force LOG (the rate limit still applies)")


def same_numbers(a: dict, b: dict, tolerance: float = TOLERANCE) -> bool:
    """Whether every number both findings read agrees within `tolerance` of the larger
    magnitude. A number only one of them read says nothing either way (a rule's optional
    capture), so findings with no number in common agree: the fingerprint alone decides."""
    for key in a.keys() & b.keys():
        x, y = float(a[key]), float(b[key])
        if abs(x - y) > tolerance * max(abs(x), abs(y)):
            return False
    return True


def future_dated(intent: IntentSummary, now: datetime) -> bool:
    return intent.raised_at - now > FUTURE_TOLERANCE


class IntentsProjection(Projection[Intents]):
    name = "intents"
    types = frozenset({"IntentRaised", "IntentDeduplicated", "IntentArchived", "RunStarted", "RunRefused",
                       "RetryForced"})

    def initial(self) -> Intents:
        return Intents()

    def apply(self, state: Intents, event: Recorded) -> Intents:
        e = event.event
        shared = self.shared
        if event.type == "IntentRaised":
            state.by_id[e.intent_id] = IntentSummary(
                intent_id=e.intent_id, deployment=shared[e.deployment], kind=shared[e.kind], action=shared[e.action],
                fingerprint=shared[e.fingerprint], raised_at=event.occurred, incident_id=e.incident_id,
                seed_fix=shared.json(e.seed_fix), reason=shared[e.reason], numbers=shared.json(e.numbers),
                dedupe_until=e.dedupe_until)
            key = f"{e.deployment}\x1f{e.fingerprint}"
            state.latest[key] = e.intent_id
            state.raised.setdefault(key, []).append(e.intent_id)
            return state
        if event.type == "RetryForced":
            state.forced[e.incident_id] = True
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
