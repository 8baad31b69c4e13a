"""Canaries on their own: canary-start records the intention (PreflightPassed in, CanaryStarted
out); canary-run runs it through a fake backend (CanaryStarted in; the canary's log as an
IncidentCaptured and CanaryCompleted out, the launch and any reaped orphan recorded on the way)."""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from selfheal.eventstore import derived_id
from selfheal.handlers.canary import RunCanary, StartCanary
from selfheal.handlers.ports import CanaryOutcome, Launch
from selfheal.schemas.events import (
    CanaryLaunched, CanaryMeasurements, CandidateProposed, PreflightPassed, RunStarted,
)
from selfheal.schemas.serving import ServingConfig
from tests.handlers.given_when_then import DEPLOYMENT, ENVIRONMENT, PRODUCTION, Given, at, deployment

CONFIG = PRODUCTION.changed(gpu_memory_utilization=0.85)
CANARY_ID = derived_id("c1", "canary")
MEASURED = CanaryMeasurements(started=True, passed_load=True, throughput_tok_s=123.0, max_concurrency=3.0,
                              gpu_headroom_gib=0.9, duration_s=42.0)
LOG = "INFO vLLM API server version 0.11.0\nINFO Application startup complete.\n"


class Backend:
    """A fake CanaryBackend: reports a launch if told to, returns the given outcome, remembers its calls."""

    def __init__(self, *, name: str = "fake", simulated: bool = False, launch: Launch | None = None,
                 finished_at: datetime | None = None):
        self.name, self.simulated, self.launch, self.finished_at = name, simulated, launch, finished_at
        self.calls: list[tuple] = []

    def run(self, config: ServingConfig, started_at: datetime, on_launch: Callable[[Launch], None] | None = None,
            *, canary_id: str | None = None) -> CanaryOutcome:
        self.calls.append((config, started_at, canary_id))
        if self.launch is not None and on_launch is not None:
            on_launch(self.launch)
        return CanaryOutcome(measurements=MEASURED, log_text=LOG, command=["vllm", "serve"],
                             finished_at=self.finished_at)


class Reaper:
    """A fake ProcessReaper: every recorded group is found alive and stopped with SIGTERM."""

    def __init__(self, unrecorded: list[tuple[int, int]] = ()):
        self.reaped: list[tuple] = []
        self._unrecorded = list(unrecorded)

    def reap(self, pid: int, pgid: int, canary_id: str) -> tuple[bool, str | None]:
        self.reaped.append((pid, pgid, canary_id))
        return True, "SIGTERM"

    def unrecorded(self, canary_id: str) -> list[tuple[int, int]]:
        return self._unrecorded


def passed_preflight() -> Given:
    start = RunStarted(run_id="r1", intent_id="i1", deployment=DEPLOYMENT, mode="dev", current=PRODUCTION,
                       environment=ENVIRONMENT)
    proposed = CandidateProposed(run_id="r1", candidate_id="c1", deployment=DEPLOYMENT, config=CONFIG,
                                 changes={"gpu_memory_utilization": [0.8, 0.85]}, origin="seed", rank=0)
    passed = PreflightPassed(run_id="r1", candidate_id="c1", required_bytes=1, free_bytes=2, margin_bytes=0,
                             snapshot=[])
    return Given(("run-r1", start), ("run-r1", proposed), ("run-r1", passed, at(minutes=1)))


def started(backend: Backend) -> Given:
    given = passed_preflight()
    given.when(StartCanary(deployment(backend=backend))).record()
    return given


def test_canary_start_records_the_canary_before_anything_runs():
    backend = Backend(name="vllm", simulated=False)
    then = passed_preflight().when(StartCanary(deployment(backend=backend)))
    assert then.types == ["CanaryStarted"] and then.streams == ["run-r1"]
    canary = then.events[0]
    assert (canary.run_id, canary.candidate_id, canary.canary_id) == ("r1", "c1", CANARY_ID)
    assert (canary.backend, canary.simulated) == ("vllm", False)
    assert backend.calls == []  # nothing started yet
    then.caused(at(minutes=1))


def test_canary_start_marks_a_simulated_backend():
    canary = passed_preflight().when(StartCanary(deployment(backend=Backend(name="sim", simulated=True))))
    assert (canary.one("CanaryStarted").backend, canary.one("CanaryStarted").simulated) == ("sim", True)


def test_canary_run_records_the_log_as_an_incident_and_the_measurements():
    backend = Backend(finished_at=at(minutes=4))
    given = started(backend)
    then = given.when(RunCanary(deployment(backend=backend)))
    incident_id = derived_id(CANARY_ID, "incident")
    assert then.types == ["IncidentCaptured", "CanaryCompleted"]
    assert then.streams == [f"incident-{incident_id}", "run-r1"]
    incident, completed = then.events
    assert backend.calls == [(CONFIG, at(minutes=1), CANARY_ID)]  # the candidate, at its cause's time
    assert (incident.incident_id, incident.deployment, incident.raw_text) == (incident_id, DEPLOYMENT, LOG)
    assert (incident.source.kind, incident.source.canary_id) == ("canary", CANARY_ID)
    assert incident.context == {"environment": ENVIRONMENT, "run_id": "r1"}
    assert (completed.run_id, completed.candidate_id, completed.canary_id) == ("r1", "c1", CANARY_ID)
    assert (completed.backend, completed.simulated, completed.log_incident_id) == ("fake", False, incident_id)
    assert completed.measurements == MEASURED
    then.caused(at(minutes=4))  # when the backend says the canary ended
    assert then.progress == []  # no launch reported, nothing recorded on the way


def test_canary_run_without_an_end_time_takes_its_causes_time():
    backend = Backend()
    then = started(backend).when(RunCanary(deployment(backend=backend)))
    then.caused(at(minutes=1))


def test_a_launch_is_recorded_at_once_while_the_canary_runs():
    launch = Launch(pid=4100, pgid=4100, port=18000, command=["vllm", "serve", "m"])
    backend = Backend(launch=launch, finished_at=at(minutes=4))
    given = started(backend)
    canary_started = given.last
    then = given.when(RunCanary(deployment(backend=backend)))
    assert [r.type for r in then.progress] == ["CanaryLaunched"]
    recorded = then.progress[0]
    assert recorded.stream == "run-r1" and recorded.causation_id == canary_started.event_id
    assert recorded.occurred == at(minutes=1)
    assert recorded.event == CanaryLaunched(canary_id=CANARY_ID, attempt=1, pid=4100, pgid=4100, port=18000,
                                            command=["vllm", "serve", "m"])
    assert then.types == ["IncidentCaptured", "CanaryCompleted"]


def test_a_canary_run_again_after_a_crash_reaps_its_orphans_first():
    launch = Launch(pid=4200, pgid=4200, port=18001, command=["vllm", "serve", "m"])
    backend = Backend(launch=launch)
    given = started(backend)
    canary_started = given.last
    # the first try launched pid 4100 and crashed before CanaryCompleted
    given.record("run-r1", CanaryLaunched(canary_id=CANARY_ID, attempt=1, pid=4100, pgid=4100, port=18000),
                 at(minutes=1))
    reaper = Reaper(unrecorded=[(4150, 4150)])
    then = given.when(RunCanary(deployment(backend=backend, reaper=reaper)), canary_started)
    assert reaper.reaped == [(4100, 4100, CANARY_ID), (4150, 4150, CANARY_ID)]
    assert [r.type for r in then.progress] == ["CanaryOrphanReaped", "CanaryOrphanReaped", "CanaryLaunched"]
    first, second, relaunch = (r.event for r in then.progress)
    assert (first.pid, first.alive, first.signal) == (4100, True, "SIGTERM") and second.pid == 4150
    assert (relaunch.attempt, relaunch.pid) == (2, 4200)
    assert then.types == ["IncidentCaptured", "CanaryCompleted"]
