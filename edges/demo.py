"""`selfheal demo`: one whole incident on the simulator, in a fresh log.

The production server of a scenario is started on the simulator with its current config;
its output (vLLM's own wording) and what its /metrics show production's watcher (preemption
storms, KV cache pressure, refused over-long prompts, queue growth) are captured as an incident, and the loop runs until it
ends in a promotion or an escalation.
"""
from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import msgspec

from selfheal.edges.deployments import from_scenario
from selfheal.edges.sim import simulate
from selfheal.edges.sim_backend import with_symptoms
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


def demo_name(scenario: str) -> str:
    """The deployment's (and temp folder's) name: a bundled scenario's name, or a scenario
    file's stem (`./my.toml` is `my`): a path would mangle the folder name."""
    return Path(scenario).stem if ("/" in scenario or scenario.endswith(".toml")) else scenario


def demo(scenario: str = DEFAULT_SCENARIO, db: str | Path | None = None, *, mode: str = "dev", node: str = "",
         clock: Callable[[], datetime] = system_clock) -> DemoResult:
    name = demo_name(scenario)
    settings = Settings(mode=mode, deployments={name: DeploymentSettings(scenario=scenario)})
    # the scenario is read before any folder is made: a bad name leaves nothing behind
    edges = from_scenario(name, settings.deployments[name], settings.preflight.margin_gib)
    path = Path(db) if db else default_demo_path(name)
    try:
        return _run(path, name, edges, settings, mode, clock, node)
    except BaseException:
        if not db:  # the temp folder is the demo's own: a failed demo leaves no empty folder
            shutil.rmtree(path.parent, ignore_errors=True)
        raise


def _holds_events(path: Path) -> bool:
    if not path.exists() or path.stat().st_size == 0:
        return False
    with open_store(path) as store:
        return store.last_position() > 0


def _run(path: Path, scenario: str, edges, settings: Settings, mode: str, clock, node: str) -> DemoResult:
    if _holds_events(path):
        raise FileExistsError(f"{path}: already holds events, and the demo writes a fresh log; "
                              "give --db (or $SELFHEAL_DB, or --out) a path that does not exist yet")
    production = simulate(edges.backend.scenario, edges.current)
    with open_store(path, create=True) as store:
        # the server's log and, when it served, the symptoms its /metrics show a watcher
        # (edges/sim/metrics.py): one incident, read by the observer like any other
        incident_id = loop.capture(store, edges, with_symptoms(production), IncidentSource(kind="simulator"), clock)
        loop.run(store, settings, {scenario: edges}, mode, node=node)
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
