"""The gate: a tune intent becomes a run only if the mode and the rate limit allow it.

The mode is read once at the edge (config file, overridden by SELFHEAL_MODE) and recorded in
RunRequested, so a replay knows which mode each decision was taken under. The node (the fleet
member whose runner decided) is configuration too, chosen at the edge and passed in, and is
recorded in RunStarted and RunRefused so that `history --node` can tell the fleet apart. The rate limit
is a projection of event times (`projections.rate_limit`); a refusal is itself an event,
with the reason and the time the next run is allowed.
"""
from __future__ import annotations

from selfheal.eventstore.store import Recorded, derived_id
from selfheal.handlers.runtime import Emitted, Reactor
from selfheal.projections.base import View
from selfheal.projections.rate_limit import decide
from selfheal.schemas.config import RateLimitSettings
from selfheal.schemas.events import IntentArchived, IntentRaised, RunRefused, RunRequested, RunStarted


class Gate(Reactor):
    """A tune intent becomes a run if the mode and the rate limit allow; a refusal says why and when."""

    name = "gate"
    subscribes_to = (IntentRaised,)
    emits = (RunRequested, RunStarted, RunRefused, IntentArchived)

    def __init__(self, mode: str, limits: RateLimitSettings, node: str = ""):
        self.mode = mode
        self.limits = limits
        self.node = node

    def react(self, event: Recorded, view: View) -> Emitted:
        intent = event.event
        if intent.action != "tune":
            return ()
        stream = f"intent-{intent.intent_id}"
        if self.mode == "disabled":
            archived = IntentArchived(intent_id=intent.intent_id, deployment=intent.deployment,
                                      outcome="recorded_only")
            return [(stream, event.follow(archived, "archived"))]
        run_id = derived_id(event.event_id, "run")
        run_stream = f"run-{run_id}"
        requested = RunRequested(run_id=run_id, intent_id=intent.intent_id, deployment=intent.deployment,
                                 mode=self.mode)
        out = [(run_stream, event.follow(requested, "requested"))]
        decision = decide(view["rate_limit"].budget(intent.deployment), self.limits, event.occurred)
        if not decision.allowed:
            refused = RunRefused(run_id=run_id, intent_id=intent.intent_id, deployment=intent.deployment,
                                 reason=decision.reason, next_allowed_at=decision.next_allowed_at, node=self.node)
            archived = IntentArchived(intent_id=intent.intent_id, deployment=intent.deployment,
                                      outcome="refused", run_id=run_id)
            return out + [(run_stream, event.follow(refused, "refused")), (stream, event.follow(archived, "archived"))]
        started = RunStarted(run_id=run_id, intent_id=intent.intent_id, deployment=intent.deployment,
                             mode=self.mode, current=intent.current, environment=intent.environment,
                             node=self.node)
        return out + [(run_stream, event.follow(started, "started"))]
