"""The scoring reactor: records the fitness (handlers.models.scoring, documented in the
README) of every canary that completed."""
from __future__ import annotations

from selfheal.eventstore.store import Recorded
from selfheal.handlers.models.scoring import score
from selfheal.handlers.runtime import Emitted, Reactor
from selfheal.projections.base import View
from selfheal.schemas.events import CanaryCompleted, CandidateScored


class ScoreCanary(Reactor):
    """Fitness from the canary's measurements (the documented function)."""

    name = "score"
    subscribes_to = (CanaryCompleted,)
    emits = (CandidateScored,)

    def __init__(self, margin_gib: float):
        self.margin_gib = margin_gib

    def react(self, event: Recorded, view: View) -> Emitted:
        e = event.event
        run = view["runs"].by_id[e.run_id]
        verdict = score(e.measurements, self.margin_gib, run.candidate(e.candidate_id).config, run.current)
        scored = CandidateScored(run_id=e.run_id, candidate_id=e.candidate_id, passed=verdict.passed,
                                 fitness=verdict.fitness, components=verdict.components, reason=verdict.reason)
        return [(f"run-{e.run_id}", event.follow(scored, self.name))]
