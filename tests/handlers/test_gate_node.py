"""The node a run was decided on: configuration given to the gate (never read inside it),
recorded in RunStarted and RunRefused, and read back by the runs projection."""
from __future__ import annotations

import msgspec

from selfheal.handlers.gate import Gate
from selfheal.schemas.events import RunRefused, RunStarted
from tests.handlers.given_when_then import Given
from tests.handlers.test_gate_unit import LIMITS, intent, past_run


def test_a_started_run_records_the_node_the_gate_was_given():
    given = Given(("intent-i1", intent()))
    then = given.when(Gate("dev", LIMITS, node="gpu-node-7"))
    assert then.one("RunStarted").node == "gpu-node-7"
    then.record()
    (run,) = given.view()["runs"].by_id.values()
    assert (run.status, run.node) == ("running", "gpu-node-7")


def test_a_refused_run_records_the_node_too():
    given = Given(*past_run("a", -2), ("intent-i1", intent()))  # inside the cooldown
    then = given.when(Gate("dev", LIMITS, node="gpu-node-8"))
    assert then.one("RunRefused").node == "gpu-node-8"
    then.record()
    refused = [r for r in given.view()["runs"].by_id.values() if r.status == "refused"]
    assert [r.node for r in refused] == ["gpu-node-8"]


def test_events_recorded_before_nodes_were_named_still_decode():
    given = Given(("intent-i1", intent()))
    started = given.when(Gate("dev", LIMITS, node="n")).one("RunStarted")
    for event, cls in ((started, RunStarted), (RunRefused(run_id="r", intent_id="i", deployment="d", reason="x",
                                                          node="n"), RunRefused)):
        old = {k: v for k, v in msgspec.to_builtins(event).items() if k != "node"}
        assert msgspec.json.decode(msgspec.json.encode(old), type=cls).node == ""
