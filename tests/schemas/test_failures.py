"""One list of failure kinds: the rules, the tournament, the backends and the log all use it."""
from __future__ import annotations

import msgspec
import pytest

from selfheal.edges.sim import bundled_scenarios, load_scenario, simulate
from selfheal.handlers.observer.rules import KINDS, builtin_ruleset
from selfheal.handlers.models.search import RELEVANT
from selfheal.schemas.events import CanaryMeasurements, EVENT_TYPES
from selfheal.schemas.failures import CONFIG_KINDS, FAILURE_KINDS, FINDING_KINDS, OutcomeKind
from selfheal.schemas.jsonschema import render

RULES = builtin_ruleset().rules  # the built-in rules' specs


def test_kinds_are_listed_once():
    assert len(set(FAILURE_KINDS)) == len(FAILURE_KINDS)
    assert FAILURE_KINDS[:len(FINDING_KINDS)] == FINDING_KINDS
    assert not set(FINDING_KINDS) & set(OutcomeKind.__args__)


def test_rules_may_name_exactly_the_finding_kinds():
    assert KINDS is FINDING_KINDS
    assert {r.kind for r in RULES} - {"context"} <= set(FINDING_KINDS)


def test_tournament_and_backends_name_known_kinds():
    assert set(RELEVANT) <= set(FAILURE_KINDS)
    assert "other_config_error" in RELEVANT  # the fallback of relevant_actuators
    assert CONFIG_KINDS <= set(FINDING_KINDS)


@pytest.mark.parametrize("name", bundled_scenarios())
def test_the_simulator_reports_known_kinds(name):
    scenario = load_scenario(name)
    result = simulate(scenario, scenario.current)
    assert result.failure_kind is None or result.failure_kind in FAILURE_KINDS


def test_the_log_refuses_an_unknown_kind():
    for kind in FAILURE_KINDS:
        body = msgspec.json.encode(CanaryMeasurements(started=False, passed_load=False, failure_kind=kind))
        assert msgspec.json.decode(body, type=CanaryMeasurements).failure_kind == kind
    bad = msgspec.json.encode(CanaryMeasurements(started=False, passed_load=False, failure_kind="nonsense"))
    with pytest.raises(msgspec.ValidationError, match="failure_kind"):
        msgspec.json.decode(bad, type=CanaryMeasurements)


def test_published_schemas_list_the_kinds():
    schema = render("CanaryCompleted")
    assert all(kind in schema for kind in FAILURE_KINDS)
    assert "VerdictRecorded" in EVENT_TYPES and '"none"' in render("VerdictRecorded")
