"""`selfheal demo`: one whole incident on the simulator, in a fresh log.

The production server of a scenario is started on the simulator with its current config;
its output (vLLM's own wording) is captured as an incident, and the loop runs until it
ends in a promotion or an escalation.
"""
from __future__ import annotations

import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import msgspec

from selfheal.edges.deployments import from_scenario
from selfheal.edges.sim import simulate
from selfheal.eventstore.recorder import system_clock
from selfheal.eventstore.store import open_store
from selfheal.handlers import loop
from selfheal.schemas.config import DeploymentSettings, Settings
from selfheal.schemas.events import IncidentSource

DEFAULT_SCENARIO = "workstation-12gb-speech"


class DemoResult(msgspec.Struct):
    db: str
    scenario: str
    incident_id: str
    outcome: str
    run_id: str | None
    events: int


def default_demo_path(scenario: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"selfheal-demo-{scenario}-")) / "selfheal.db"


def demo(scenario: str = DEFAULT_SCENARIO, db: str | Path | None = None, *, mode: str = "dev",
         clock: Callable[[], datetime] = system_clock) -> DemoResult:
    path = Path(db) if db else default_demo_path(scenario)
    if path.exists() and path.stat().st_size > 0:
        raise FileExistsError(f"{path}: the demo writes a fresh log; choose a path that does not exist")
    settings = Settings(mode=mode, deployments={scenario: DeploymentSettings(scenario=scenario)})
    edges = from_scenario(scenario, settings.deployments[scenario], settings.preflight.margin_gib)
    production = simulate(edges.backend.scenario, edges.current)
    with open_store(path, create=True) as store:
        incident_id = loop.capture(store, edges, production.log_text, IncidentSource(kind="simulator"), clock)
        loop.run(store, settings, {scenario: edges}, mode)
        outcome, run_id = "no failure found", None
        for row in store.read(types=["RunFinished", "RunRefused", "EscalationRaised", "IncidentUnmatched",
                                     "IntentArchived"]):
            e = row.event
            if row.type == "RunFinished":
                outcome, run_id = e.outcome, e.run_id
            elif row.type == "IntentArchived" and e.outcome in ("alerted", "refused", "recorded_only"):
                outcome, run_id = e.outcome, e.run_id
        return DemoResult(db=str(path), scenario=scenario, incident_id=incident_id, outcome=outcome,
                          run_id=run_id, events=store.last_position())
