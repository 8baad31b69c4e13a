"""The `sim` canary backend: a deterministic simulator of vLLM (V1) startup memory accounting
and serving capacity (vllm/memory_model.md), printing vLLM's own wording (vllm/error_formats.md).

    from selfheal.edges.sim import load_scenario, simulate
    result = simulate(load_scenario("c-mistral7b-shared-24gb"), config)

Results are marked `simulated=True` and must never be committed to a production baseline.
"""
from selfheal.edges.sim.backend import SimResult, simulate
from selfheal.edges.sim.scenario import Scenario, ScenarioError, bundled_scenarios, load_scenario, parse_scenario

__all__ = ["Scenario", "ScenarioError", "SimResult", "bundled_scenarios", "load_scenario", "parse_scenario",
           "simulate"]
