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
