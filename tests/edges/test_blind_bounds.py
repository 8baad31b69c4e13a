"""Bounds as a deployment is wired (issue 15.6): a sim deployment's actuators table overrides
its scenario's bounds one actuator at a time, never falling back to the 12 GB card's defaults
for the others; bounds that do not hold production's config are refused with where each came
from. (The CLI side: tests/cli/test_blind_cli.py.)"""
from __future__ import annotations

import pytest

from selfheal.edges.deployments import build, from_scenario
from selfheal.edges.sim import load_scenario
from selfheal.schemas.actuators import Actuator
from selfheal.schemas.config import ConfigError, parse_settings

SCENARIO = "a-llama8b-24gb"   # its own bounds: utilization up to 0.95, max_model_len up to 131072


def test_a_partial_actuators_table_keeps_the_scenarios_other_bounds():
    settings = parse_settings(f'[deployments.a]\nscenario = "{SCENARIO}"\n'
                              "[deployments.a.actuators.max_num_seqs]\nmin = 16\nmax = 256\nstep = 16\n")
    bounds = from_scenario("a", settings.deployments["a"], 0.5).bounds
    own = load_scenario(SCENARIO).actuators
    assert bounds.max_num_seqs == Actuator(name="max_num_seqs", min=16, max=256, step=16)
    assert bounds.max_model_len == own.max_model_len and bounds.gpu_memory_utilization == own.gpu_memory_utilization
    assert bounds.max_model_len.max == 131072   # not the default 8192, which would not hold production


def test_a_scenario_without_bounds_of_its_own_is_named_with_the_defaults():
    settings = parse_settings('[deployments.w]\nscenario = "workstation-12gb-speech"\n'
                              "current = {gpu_memory_utilization = 0.9, max_model_len = 16384, max_num_seqs = 16}\n")
    with pytest.raises(ConfigError) as info:
        build(settings)
    assert str(info.value).startswith(
        "deployment 'w': its bounds do not hold the config it runs: max_model_len 16384 (from deployments.w.current) "
        "lies outside [1024, 8192] (from the default bounds, for a 12 GB card: scenario workstation-12gb-speech "
        "sets none)")


def test_a_scenarios_own_bounds_are_named_as_the_scenarios():
    settings = parse_settings(f'[deployments.a]\nscenario = "{SCENARIO}"\n'
                              "current = {gpu_memory_utilization = 0.97, max_model_len = 8192, max_num_seqs = 16}\n")
    with pytest.raises(ConfigError, match=r"gpu_memory_utilization 0.97 \(from deployments.a.current\) lies outside "
                                          rf"\[0.6, 0.95\] \(from scenario {SCENARIO}'s \[actuators\]\)"):
        build(settings)


def test_every_bundled_scenario_wires_with_its_own_bounds():
    from selfheal.edges.sim import bundled_scenarios
    names = bundled_scenarios()
    settings = parse_settings("".join(f'[deployments."{n}"]\nscenario = "{n}"\n' for n in names))
    assert sorted(build(settings)) == sorted(names)
