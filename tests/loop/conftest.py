from __future__ import annotations

import pytest

from selfheal.edges.deployments import from_scenario
from selfheal.edges.sim import simulate
from selfheal.eventstore import open_store
from selfheal.handlers import loop
from selfheal.schemas.config import parse_settings
from selfheal.schemas.events import IncidentSource
from tests.conftest import StepClock

WORKSTATION = "workstation-12gb-speech"


def settings_for(scenario: str = WORKSTATION, extra: str = "", mode: str = "dev"):
    return parse_settings(f'mode = "{mode}"\n[deployments.{scenario}]\nscenario = "{scenario}"\n{extra}\n')


class Harness:
    """A real SQLite log, one simulated deployment, and an injected clock."""

    def __init__(self, path, settings, scenario: str = WORKSTATION, clock=None):
        self.settings = settings
        self.scenario = scenario
        self.store = open_store(path, create=True)
        deployment = settings.deployments[scenario]
        self.edges = {scenario: from_scenario(scenario, deployment, settings.preflight.margin_gib)}
        self.clock = clock or StepClock()

    def production_log(self) -> str:
        edges = self.edges[self.scenario]
        return simulate(edges.backend.scenario, edges.current).log_text

    def incident(self, text: str | None = None, mode: str | None = None) -> str:
        incident_id = loop.capture(self.store, self.edges[self.scenario], text or self.production_log(),
                                   IncidentSource(kind="simulator"), self.clock)
        loop.run(self.store, self.settings, self.edges, mode or self.settings.mode)
        return incident_id

    def events(self, *types):
        return [r for r in self.store.read() if not types or r.type in types]


@pytest.fixture
def harness(tmp_path):
    made = []

    def make(scenario: str = WORKSTATION, extra: str = "", mode: str = "dev", clock=None) -> Harness:
        h = Harness(tmp_path / f"log-{len(made)}.db", settings_for(scenario, extra, mode), scenario, clock)
        made.append(h)
        return h

    yield make
    for h in made:
        h.store.close()
