"""Canary handlers: record the intention to start a canary, then run it and record the result.

Two handlers, so that CanaryStarted is committed (with its checkpoint) before the canary
runs: a crash during a canary leaves a CanaryStarted without a CanaryCompleted, which a
restarted runner sees and handles again. The canary's whole output is captured as an
incident of its own, so the observer reads it like any other log and a failed canary
teaches the next candidate.
"""
from __future__ import annotations

import hashlib

from eventstore.store import Recorded, derived_id
from handlers.runtime import Emitted, Handler
from projections.base import View
from schemas.events import CanaryCompleted, CanaryStarted, IncidentCaptured, IncidentSource


class StartCanary(Handler):
    name = "canary-start"
    subscribes_to = frozenset({"PreflightPassed"})

    def __init__(self, deployments: dict):
        self.deployments = deployments

    def handle(self, event: Recorded, view: View) -> Emitted:
        e = event.event
        run = view["runs"].by_id[e.run_id]
        backend = self.deployments[run.deployment].backend
        started = CanaryStarted(run_id=e.run_id, candidate_id=e.candidate_id,
                                canary_id=derived_id(e.candidate_id, "canary"), backend=backend.name,
                                simulated=backend.simulated)
        return [(f"run-{e.run_id}", event.follow(started, self.name))]


class RunCanary(Handler):
    name = "canary-run"
    subscribes_to = frozenset({"CanaryStarted"})

    def __init__(self, deployments: dict):
        self.deployments = deployments

    def handle(self, event: Recorded, view: View) -> Emitted:
        e = event.event
        run = view["runs"].by_id[e.run_id]
        candidate = run.candidate(e.candidate_id)
        edges = self.deployments[run.deployment]
        outcome = edges.backend.run(candidate.config, event.occurred)
        finished_at = outcome.finished_at or event.occurred
        incident_id = derived_id(e.canary_id, "incident")
        incident = IncidentCaptured(
            incident_id=incident_id, deployment=run.deployment,
            source=IncidentSource(kind="canary", canary_id=e.canary_id), raw_text=outcome.log_text,
            fingerprint="sha256:" + hashlib.sha256(outcome.log_text.encode("utf-8", "replace")).hexdigest()[:16],
            context={"environment": run.environment, "run_id": run.run_id})
        completed = CanaryCompleted(run_id=e.run_id, candidate_id=e.candidate_id, canary_id=e.canary_id,
                                    backend=e.backend, simulated=e.simulated, measurements=outcome.measurements,
                                    log_incident_id=incident_id)
        return [(f"incident-{incident_id}", event.follow(incident, "canary-log", occurred_at=finished_at)),
                (f"run-{e.run_id}", event.follow(completed, self.name, occurred_at=finished_at))]
