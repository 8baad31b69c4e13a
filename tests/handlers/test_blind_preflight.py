"""No blind runs (issue 15.6): an inventory that cannot be read ends the run at its first
candidate, with the reason, and the run counts neither as a run nor as a failure."""
from __future__ import annotations

import dataclasses
from datetime import timedelta

from selfheal.edges.deployments import from_scenario
from selfheal.edges.sim import simulate
from selfheal.eventstore.recorder import utc_iso
from selfheal.eventstore import open_store
from selfheal.handlers import loop
from selfheal.handlers.ports import InventoryUnavailable
from selfheal.handlers.preflight import Preflight
from selfheal.handlers.tournament import Tournament
from selfheal.projections.rate_limit import decide
from selfheal.schemas.config import RateLimitSettings, parse_settings
from selfheal.schemas.events import CandidateProposed, IncidentSource, IntentRaised, RunStarted
from tests.conftest import StepClock
from tests.handlers.given_when_then import DEPLOYMENT, ENVIRONMENT, PRODUCTION, Given, T0, deployment
from tests.handlers.test_preflight_unit import Inventory, gpu

NVML_MISSING = "NVML Shared Library Not Found"


def proposed_run() -> list[tuple]:
    """An intent, its run and the run's seed candidate, as the gate and the tournament record them."""
    raised = IntentRaised(intent_id="i1", deployment=DEPLOYMENT, incident_id="inc-1", observation_id="o1",
                          kind="no_kv_cache_memory", action="tune", fingerprint="fp:1",
                          seed_fix={"gpu_memory_utilization": 0.85}, current=PRODUCTION, environment=ENVIRONMENT,
                          dedupe_until=T0 + timedelta(hours=1))
    start = RunStarted(run_id="r1", intent_id="i1", deployment=DEPLOYMENT, mode="dev", current=PRODUCTION,
                       environment=ENVIRONMENT)
    config = PRODUCTION.changed(gpu_memory_utilization=0.85)
    candidate = CandidateProposed(run_id="r1", candidate_id="c1", deployment=DEPLOYMENT, config=config,
                                  changes={"gpu_memory_utilization": [0.8, 0.85]}, origin="seed", rank=0)
    return [("intent-i1", raised), ("run-r1", start), ("run-r1", candidate)]


def _rejected_blind() -> Given:
    given = Given(*proposed_run())
    then = given.when(Preflight(deployment(inventory=Inventory(unavailable=NVML_MISSING)), 0.5))
    assert then.types == ["PreflightRejected"] and then.streams == ["run-r1"]
    rejected = then.events[0]
    assert rejected.inventory_unavailable and NVML_MISSING in rejected.reason
    then.record()
    return given


def test_an_unreadable_inventory_ends_the_run_with_the_reason():
    # pre-flight records the rejection, marked; the tournament, which ends runs, ends this one on it
    then = _rejected_blind().when(Tournament(deployment(), max_candidates=5, max_changes=2))
    assert then.types == ["EscalationRaised", "RunFinished", "IntentArchived"]
    assert then.streams == ["run-r1", "run-r1", "intent-i1"]
    escalation, finished, archived = then.events
    assert escalation.reason.startswith("pre-flight cannot read the GPU inventory, so no candidate can be checked")
    assert NVML_MISSING in escalation.reason and (escalation.run_id, escalation.intent_id) == ("r1", "i1")
    assert [(c.candidate_id, c.outcome) for c in escalation.candidates] == [("c1", "rejected in pre-flight")]
    # the person is told when the same failure may raise a new intent, and how to force it sooner
    assert utc_iso(T0 + timedelta(hours=1)) in escalation.retry and "selfheal heal --force" in escalation.retry
    assert (finished.outcome, finished.succeeded, finished.canaries) == ("escalated", False, 0)
    assert finished.inventory_unavailable
    assert (archived.intent_id, archived.outcome, archived.run_id) == ("i1", "escalated", "r1")
    then.caused(T0)


def test_a_device_that_is_read_but_too_full_leaves_the_run_to_the_tournament():
    then = Given(*proposed_run()).when(Preflight(deployment(inventory=Inventory([gpu(free_gib=2.0)])), 0.5))
    assert then.types == ["PreflightRejected"] and not then.events[0].inventory_unavailable


def test_a_deployment_removed_from_the_config_is_left_to_the_tournament():
    then = Given(*proposed_run()).when(Preflight({}, 0.5))
    assert then.types == ["PreflightRejected"] and not then.events[0].inventory_unavailable
    assert f"deployment {DEPLOYMENT!r} is no longer configured" == then.events[0].reason


def test_a_run_already_over_is_not_ended_twice():
    given = _rejected_blind()
    tournament = Tournament(deployment(), max_candidates=5, max_changes=2)
    given.when(tournament).record()
    # the rejection offered again (a runner that crashed after the commit): nothing more
    again = given.when(tournament, given.events("PreflightRejected")[0])
    assert again.types == []


class Blind:
    """An inventory that cannot be read, and counts how often it was asked."""

    def __init__(self):
        self.reads = 0

    def snapshot(self):
        self.reads += 1
        raise InventoryUnavailable(NVML_MISSING)


def test_the_loop_spends_one_candidate_and_the_fixed_host_heals_at_once(tmp_path):
    """The whole story on a real log: NVML missing ends the run after one candidate and no
    canary; once the inventory reads, a forced retry runs at once (no cooldown, no backoff)
    and heals."""
    name = "workstation-12gb-speech"
    settings = parse_settings(f'mode = "dev"\n[deployments.{name}]\nscenario = "{name}"\n')
    edges = from_scenario(name, settings.deployments[name], settings.preflight.margin_gib)
    blind = Blind()
    clock = StepClock()
    text = simulate(edges.backend.scenario, edges.current).log_text
    with open_store(tmp_path / "log.db", create=True) as store:
        loop.capture(store, dataclasses.replace(edges, inventory=blind), text, IncidentSource(kind="simulator"), clock)
        loop.run(store, settings, {name: dataclasses.replace(edges, inventory=blind)}, clock=clock)
        types = [r.type for r in store.read()]
        assert types.count("CandidateProposed") == 1 and blind.reads == 1 and "CanaryStarted" not in types
        (finished,) = [r.event for r in store.read(types=["RunFinished"])]
        assert finished.inventory_unavailable and finished.outcome == "escalated"
        loop.capture(store, edges, text, IncidentSource(kind="simulator"), clock, force=True)
        loop.run(store, settings, {name: edges}, clock=clock)
        runs = [r.type for r in store.read(types=["RunStarted", "RunRefused"])]
        assert runs == ["RunStarted", "RunStarted"], runs
        outcomes = [r.event.outcome for r in store.read(types=["RunFinished"])]
        assert outcomes == ["escalated", "promoted"]


def test_decide_allows_a_run_at_once_after_a_blind_one():
    limits = RateLimitSettings()
    given = _rejected_blind()
    given.when(Tournament(deployment(), max_candidates=5, max_changes=2)).record()
    budget = given.view()["rate_limit"].budget(DEPLOYMENT)
    assert budget.run_starts == [] and budget.open_runs == [] and budget.consecutive_failures == 0
    assert decide(budget, limits, T0).allowed
