"""Issue 13, round two, item 8: a run whose deployment was removed from the config while the
run was open is closed by the tournament (escalated, with the reason, as events), at whichever
of the tournament's events it stopped, instead of failing every `run` on a missing key."""
from __future__ import annotations

import pytest

from selfheal.handlers.tournament import Tournament
from selfheal.schemas.events import PreflightRejected
from tests.handlers.given_when_then import DEPLOYMENT
from tests.handlers.test_tournament_unit import FAILED, canary, run_started, seeded, tournament


def _closed(then) -> None:
    assert then.types == ["EscalationRaised", "RunFinished", "IntentArchived"], then.types
    escalation, finished, archived = then.events
    assert f"deployment {DEPLOYMENT!r} is no longer configured" in escalation.reason
    assert finished.outcome == "escalated" and not finished.succeeded and archived.outcome == "escalated"
    then.caused()


def test_a_run_started_for_a_removed_deployment_is_closed():
    _closed(run_started().when(Tournament({}, max_candidates=6, max_changes=2)))


@pytest.mark.parametrize("stopped_at", ["CandidateScored", "PreflightRejected"])
def test_a_run_midway_for_a_removed_deployment_is_closed_with_its_candidates(stopped_at):
    given, seed = seeded(tournament())
    if stopped_at == "CandidateScored":
        canary(given, seed, FAILED, minute=1)
    else:
        given.record(f"run-{seed.run_id}", PreflightRejected(run_id=seed.run_id, candidate_id=seed.candidate_id,
                                                             reason="no room", required_bytes=2, free_bytes=1,
                                                             margin_bytes=0, snapshot=[]))
    then = given.when(Tournament({}, max_candidates=6, max_changes=2))
    _closed(then)
    assert [c.candidate_id for c in then.events[0].candidates] == [seed.candidate_id]


# the steps after the tournament's: none may fail on a deployment that is gone

def test_preflight_of_a_removed_deployment_rejects_so_the_tournament_closes_the_run():
    from selfheal.handlers.preflight import Preflight
    given, seed = seeded(tournament())
    given.record(f"run-{seed.run_id}", seed)
    then = given.when(Preflight({}, margin_gib=1.0))
    assert then.types == ["PreflightRejected"]
    assert f"deployment {DEPLOYMENT!r} is no longer configured" in then.events[0].reason
    then.record()
    _closed(given.when(Tournament({}, max_candidates=6, max_changes=2)))


def test_commit_and_reload_of_a_removed_deployment_record_why_and_write_nothing():
    from selfheal.handlers.baseline import ReloadAndVerify, WriteConfig
    from selfheal.schemas.events import BaselineCommitStarted, ReloadRequested
    from selfheal.schemas.serving import ServingConfig
    from tests.handlers.given_when_then import Given
    config = ServingConfig(gpu_memory_utilization=0.8, max_model_len=4096, max_num_seqs=8, max_num_batched_tokens=2048)
    given = Given((f"deployment-{DEPLOYMENT}", BaselineCommitStarted(
        commit_id="c1", promotion_id="p1", deployment=DEPLOYMENT, version=2, path="/nowhere/vllm.yaml",
        config=config)))
    then = given.when(WriteConfig({}))
    assert then.types == ["PromotionNotCommitted"] and "no longer configured" in then.events[0].reason
    given.record(f"deployment-{DEPLOYMENT}", ReloadRequested(commit_id="c1", deployment=DEPLOYMENT, method="restart", target="x",
                                                             purpose="commit"))
    then = given.when(ReloadAndVerify({}))
    assert then.types == ["VerificationFinished"] and not then.events[0].healthy
