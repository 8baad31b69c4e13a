"""Canary handlers: record the intention to start a canary, then run it and record the result.

Two handlers, so that CanaryStarted is committed (with its checkpoint) before the canary
runs: a crash during a canary leaves a CanaryStarted without a CanaryCompleted, which a
restarted runner sees and handles again. A backend that starts a process reports it at
once and it is recorded (CanaryLaunched, with pid and process group) while the canary
runs, so the runner that handles the event again first stops whatever a crashed selfheal
left running (CanaryOrphanReaped), then runs the canary anew. The canary's whole output is
captured as an incident of its own, so the observer reads it like any other log and a
failed canary teaches the next candidate.
"""
from __future__ import annotations

import hashlib

from selfheal.eventstore.store import Recorded, derived_id
from selfheal.handlers.runtime import Emitted, Handler
from selfheal.projections.base import View
from selfheal.schemas.events import (
    CanaryCompleted, CanaryLaunched, CanaryOrphanReaped, CanaryStarted, IncidentCaptured, IncidentSource,
)


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
        stream = f"run-{e.run_id}"
        earlier = [r.event for r in view.store.read_stream(stream)
                   if r.type == "CanaryLaunched" and r.event.canary_id == e.canary_id]
        for launch in earlier:
            self._reap(view, event, stream, launch.canary_id, launch.pid, launch.pgid, f"reaped-{launch.attempt}")
        if not edges.backend.simulated:
            from selfheal.edges.processes import marked_groups

            # a crash between a server's start and its CanaryLaunched record leaves a group the
            # log does not know; the canary id in its environment still names it
            for pid, pgid in marked_groups(e.canary_id):
                self._reap(view, event, stream, e.canary_id, pid, pgid, f"reaped-unrecorded-{pgid}")

        def on_launch(launch) -> None:
            attempt = len(earlier) + 1
            record = CanaryLaunched(canary_id=e.canary_id, attempt=attempt, pid=launch.pid, pgid=launch.pgid,
                                    port=launch.port, command=list(launch.command))
            view.store.append(stream, [event.follow(record, f"launch-{attempt}")])

        outcome = edges.backend.run(candidate.config, event.occurred, on_launch, canary_id=e.canary_id)
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
                (stream, event.follow(completed, self.name, occurred_at=finished_at))]

    @staticmethod
    def _reap(view: View, event: Recorded, stream: str, canary_id: str, pid: int, pgid: int, key: str) -> None:
        from selfheal.edges.processes import reap_orphan

        alive, signal_name = reap_orphan(pid, pgid, canary_id)
        reaped = CanaryOrphanReaped(canary_id=canary_id, pid=pid, pgid=pgid, alive=alive, signal=signal_name)
        view.store.append(stream, [event.follow(reaped, key)])
