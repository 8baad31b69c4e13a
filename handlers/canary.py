"""Canaries: a reactor records the intention to start one, an activity runs it.

CanaryStarted is committed (with its checkpoint) before the canary runs: a crash during a
canary leaves a CanaryStarted without a CanaryCompleted, which a restarted runner handles
again. A backend that starts a process reports it at once, and the runner records it
(CanaryLaunched, with pid and process group) while the canary runs, so the runner that
handles the event again first stops whatever a crashed selfheal left running
(CanaryOrphanReaped), then runs the canary anew. The canary's whole output is captured as an
incident of its own, so the observer reads it like any other log and a failed canary
teaches the next candidate.
"""
from __future__ import annotations

from selfheal.eventstore.store import Recorded, derived_id
from selfheal.handlers.incidents import new_incident
from selfheal.handlers.observer.accounting import read_start
from selfheal.handlers.runtime import Activity, Emitted, Progress, Reactor
from selfheal.projections.base import View
from selfheal.schemas.events import (
    CanaryCompleted, CanaryLaunched, CanaryOrphanReaped, CanaryStarted, IncidentCaptured, IncidentSource,
    PreflightPassed,
)


class StartCanary(Reactor):
    """Records that a canary is about to start, before anything is started."""

    name = "canary-start"
    subscribes_to = (PreflightPassed,)
    emits = (CanaryStarted,)

    def __init__(self, deployments: dict):
        self.deployments = deployments

    def react(self, event: Recorded, view: View) -> Emitted:
        e = event.event
        run = view["runs"].by_id[e.run_id]
        if run.deployment not in self.deployments:
            return ()  # removed from the config while its run was open: no canary is started
        backend = self.deployments[run.deployment].backend
        started = CanaryStarted(run_id=e.run_id, candidate_id=e.candidate_id,
                                canary_id=derived_id(e.candidate_id, "canary"), backend=backend.name,
                                simulated=backend.simulated)
        return [(f"run-{e.run_id}", event.follow(started, self.name))]


class RunCanary(Activity):
    """Runs the canary apart from production; its measurements, and its log as an incident of its own."""

    name = "canary-run"
    port = "backend"
    replayable = True
    subscribes_to = (CanaryStarted,)
    emits = (IncidentCaptured, CanaryCompleted, CanaryLaunched, CanaryOrphanReaped)
    facts = (CanaryLaunched, CanaryOrphanReaped)

    def __init__(self, deployments: dict):
        self.deployments = deployments

    def perform(self, event: Recorded, view: View, progress: Progress) -> Emitted:
        e = event.event
        run = view["runs"].by_id[e.run_id]
        candidate = run.candidate(e.candidate_id)
        edges = self.deployments.get(run.deployment)
        if edges is None:
            return ()  # removed from the config while its run was open: nothing to run it on
        stream = f"run-{e.run_id}"
        earlier = [r.event for r in progress.recorded(stream)
                   if r.type == "CanaryLaunched" and r.event.canary_id == e.canary_id]
        if edges.reaper is not None:
            for launch in earlier:
                self._reap(edges.reaper, progress, event, stream, launch.canary_id, launch.pid, launch.pgid,
                           f"reaped-{launch.attempt}")
            # a crash between a server's start and its CanaryLaunched record leaves a group the
            # log does not know; the canary id in its environment still names it
            for pid, pgid in edges.reaper.unrecorded(e.canary_id):
                self._reap(edges.reaper, progress, event, stream, e.canary_id, pid, pgid, f"reaped-unrecorded-{pgid}")

        def on_launch(launch) -> None:
            attempt = len(earlier) + 1
            record = CanaryLaunched(canary_id=e.canary_id, attempt=attempt, pid=launch.pid, pgid=launch.pgid,
                                    port=launch.port, command=list(launch.command))
            progress.record(stream, event.follow(record, f"launch-{attempt}"))

        outcome = edges.backend.run(candidate.config, event.occurred, on_launch, canary_id=e.canary_id)
        finished_at = outcome.finished_at or event.occurred
        incident = new_incident(derived_id(e.canary_id, "incident"), run.deployment,
                                IncidentSource(kind="canary", canary_id=e.canary_id), outcome.log_text,
                                {"environment": run.environment, "run_id": run.run_id},
                                redact=view.store.redactor.text)
        completed = CanaryCompleted(run_id=e.run_id, candidate_id=e.candidate_id, canary_id=e.canary_id,
                                    backend=e.backend, simulated=e.simulated, measurements=outcome.measurements,
                                    log_incident_id=incident.incident_id,
                                    accounting=read_start(incident.raw_text))  # the predictor's facts (15.5)
        return [(f"incident-{incident.incident_id}", event.follow(incident, "canary-log", occurred_at=finished_at)),
                (stream, event.follow(completed, self.name, occurred_at=finished_at))]

    @staticmethod
    def _reap(reaper, progress: Progress, event: Recorded, stream: str, canary_id: str, pid: int, pgid: int,
              key: str) -> None:
        alive, signal_name = reaper.reap(pid, pgid, canary_id)
        reaped = CanaryOrphanReaped(canary_id=canary_id, pid=pid, pgid=pgid, alive=alive, signal=signal_name)
        progress.record(stream, event.follow(reaped, key))
