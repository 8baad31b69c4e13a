"""Issue 13, round two, item 8: actuator grids that passed validation and then exploded, and an
open run whose deployment is no longer configured.

Found by an outside tester's scripts: `[1, 1e9]` step 1 ended in MemoryError, `[1024, 131072]`
step 1 ran for minutes, `max = nan` or `inf` was accepted and every `run` then failed and left
the run open; and once the deployment was removed from the config, every `run` failed on that
run's events (`self.deployments[run.deployment]`), so no other deployment was healed either.
"""
from __future__ import annotations

import dataclasses
import time

import pytest

from selfheal.edges.deployments import from_scenario
from selfheal.edges.sim import simulate
from selfheal.eventstore import open_store
from selfheal.handlers import loop
from selfheal.handlers.models import search
from selfheal.handlers.models.search import neighbourhood
from selfheal.schemas import actuators
from selfheal.schemas.actuators import Actuator, ActuatorBounds
from selfheal.schemas.config import ConfigError, parse_settings
from selfheal.schemas.events import IncidentSource
from selfheal.schemas.serving import ServingConfig
from tests.conftest import StepClock
from tests.reliability.hostile import assert_one_line_error, selfheal

TIME_BOUND_S = 5.0
#: the bounds this file proves (schemas/actuators.py and handlers/models/search.py say why these)
MAX_GRID_POINTS = 256
MAX_NEIGHBOURHOOD = 20_000
SCENARIO = "workstation-12gb-speech"


def _settings(actuator: str, body: str):
    return parse_settings(f'[deployments.ws]\nscenario = "{SCENARIO}"\n'
                          f'[deployments.ws.actuators.{actuator}]\n{body}\n')


EXPLODING = {
    "1e9 points": ("max_model_len", "min = 1\nmax = 1e9\nstep = 1"),
    "130k points": ("max_model_len", "min = 1024\nmax = 131072\nstep = 1"),
    "max nan": ("max_model_len", "min = 1024\nmax = nan\nstep = 512"),
    "max inf": ("max_model_len", "min = 1024\nmax = inf\nstep = 512"),
    "min -inf": ("max_num_seqs", "min = -inf\nmax = 16\nstep = 2"),
    "step nan": ("max_num_seqs", "min = 2\nmax = 16\nstep = nan"),
    "step 1e-300": ("max_num_batched_tokens", "min = 512\nmax = 16384\nstep = 1e-300"),
    "util step 1e-9": ("gpu_memory_utilization", "min = 0.5\nmax = 0.9\nstep = 1e-9"),
}


@pytest.mark.parametrize("case", list(EXPLODING))
def test_an_actuator_grid_that_cannot_be_searched_is_refused_naming_the_actuator(case):
    actuator, body = EXPLODING[case]
    started = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        _settings(actuator, body)
    message = str(caught.value)
    assert time.monotonic() - started < TIME_BOUND_S
    assert "\n" not in message
    assert message.startswith(f"selfheal.toml: deployments.ws.actuators.{actuator}"), message
    if "points" in case or "step 1e" in case:
        assert f"at most {MAX_GRID_POINTS}" in message, message
    else:
        assert "finite" in message, message


def test_the_bounds_proven_here_are_the_ones_in_force():
    assert actuators.MAX_GRID_POINTS == MAX_GRID_POINTS and search.MAX_NEIGHBOURHOOD == MAX_NEIGHBOURHOOD


def test_the_widest_grids_the_bundled_scenarios_use_stay_allowed():
    settings = _settings("max_model_len", f"min = 1024\nmax = {1024 + 512 * (MAX_GRID_POINTS - 1)}\nstep = 512")
    assert len(settings.deployments["ws"].bounds().max_model_len.grid()) == MAX_GRID_POINTS
    assert len(_settings("max_model_len", "min = 4096\nmax = 131072\nstep = 1024")
               .deployments["ws"].bounds().max_model_len.grid()) == 125


def test_an_actuator_built_in_code_refuses_non_finite_bounds_and_samples_a_wide_grid():
    """Scenario files and library callers build Actuator directly: NaN, infinity and a step
    of 0 are refused there too, and a grid wider than the bound is sampled evenly to it."""
    for bad in (dict(min=1024, max=float("nan"), step=512), dict(min=1024, max=float("inf"), step=512),
                dict(min=float("-inf"), max=16, step=2), dict(min=2, max=16, step=0)):
        with pytest.raises(ValueError, match="actuator max_model_len: "):
            Actuator(name="max_model_len", **bad)
    for wide in (Actuator(name="max_model_len", min=1, max=1e9, step=1),
                 Actuator(name="max_model_len", min=1024, max=131072, step=1),
                 Actuator(name="gpu_memory_utilization", min=0.0, max=1.0, step=1e-320)):
        started = time.monotonic()
        grid = wide.grid()
        assert time.monotonic() - started < 0.1
        assert len(grid) == MAX_GRID_POINTS and grid == sorted(set(grid))
        assert grid[0] == wide.min and grid[-1] <= wide.max and wide.max - grid[-1] < wide.max / 1000
        assert all(wide.contains(v) for v in grid)


def test_the_cli_refuses_an_exploding_grid_in_one_line(tmp_path):
    toml = tmp_path / "selfheal.toml"
    toml.write_text(f'[deployments.ws]\nscenario = "{SCENARIO}"\n'
                    '[deployments.ws.actuators.max_model_len]\nmin = 1\nmax = 1e9\nstep = 1\n')
    result = selfheal(tmp_path, "--config", str(toml), "--db", str(tmp_path / "log.db"), "run", timeout=30)
    assert_one_line_error(result)
    assert "deployments.ws.actuators.max_model_len" in result.err and str(MAX_GRID_POINTS) in result.err
    assert result.seconds < 15


def test_the_search_space_stays_bounded_whatever_the_changes_allowed():
    """Each grid is bounded, but the tournament predicts every config changing up to
    `max_changes` (at most 5) of them: 256 points on four actuators is 4e9 configs at 4 changes."""
    n = MAX_GRID_POINTS
    bounds = ActuatorBounds(
        gpu_memory_utilization=Actuator(name="gpu_memory_utilization", min=0.5, max=0.5 + 0.001 * (n - 1), step=0.001),
        max_num_seqs=Actuator(name="max_num_seqs", min=1, max=n, step=1),
        max_model_len=Actuator(name="max_model_len", min=1024, max=1024 + 64 * (n - 1), step=64),
        max_num_batched_tokens=Actuator(name="max_num_batched_tokens", min=512, max=512 + 64 * (n - 1), step=64))
    current = ServingConfig(gpu_memory_utilization=0.6, max_model_len=4096, max_num_seqs=8, max_num_batched_tokens=2048)
    names = ["gpu_memory_utilization", "max_model_len", "max_num_seqs", "max_num_batched_tokens", "enforce_eager"]
    for changes in (2, 5):
        started = time.monotonic()
        configs = neighbourhood(current, names, bounds, changes)
        assert time.monotonic() - started < TIME_BOUND_S
        assert 0 < len(configs) <= MAX_NEIGHBOURHOOD
        assert all(not bounds.violations(c) and 1 <= len(current.diff(c)) <= changes for c in configs)
        assert len(set(configs)) == len(configs)
        # thinned evenly: each actuator still reaches both ends of its grid
        for name in names[:4]:
            grid = bounds.numeric()[name].grid()
            assert {grid[0], grid[-1]} <= {getattr(c, name) for c in configs}


def test_a_small_search_space_is_not_thinned():
    bounds = ActuatorBounds()
    current = ServingConfig(gpu_memory_utilization=0.8, max_model_len=4096, max_num_seqs=8, max_num_batched_tokens=2048)
    names = ["gpu_memory_utilization", "max_model_len", "max_num_seqs", "max_num_batched_tokens"]
    sizes = [len(a.grid()) - 1 for a in bounds.numeric().values()]
    full = sum(sizes) + sum(a * b for i, a in enumerate(sizes) for b in sizes[i + 1:])
    assert len(neighbourhood(current, names, bounds, 2)) == full


# --- an open run of a deployment that is no longer configured ----------------------------------

class _Boom:
    def predict(self, config, current):
        raise RuntimeError("the predictor failed")


def _incident(store, edges, clock) -> str:
    text = simulate(edges.backend.scenario, edges.current).log_text
    return loop.capture(store, edges, text, IncidentSource(kind="simulator"), clock)


def test_an_open_run_of_a_removed_deployment_is_closed_and_others_are_healed(tmp_path):
    both = parse_settings(f'[deployments.old]\nscenario = "{SCENARIO}"\n[deployments.ws]\nscenario = "{SCENARIO}"\n')
    only_ws = parse_settings(f'[deployments.ws]\nscenario = "{SCENARIO}"\n')
    clock = StepClock()
    with open_store(tmp_path / "log.db", create=True) as store:
        old = from_scenario("old", both.deployments["old"], both.preflight.margin_gib)
        # a run of `old` is left open: its tournament failed (as `max = nan` made it fail)
        broken = {"old": dataclasses.replace(old, predictor=_Boom())}
        _incident(store, old, clock)
        with pytest.raises(RuntimeError):
            loop.run(store, both, broken, clock=clock)
        assert [r.event.deployment for r in store.read() if r.type == "RunStarted"] == ["old"]

        # `old` is removed from the config; `ws` has an incident of its own
        ws = {"ws": from_scenario("ws", only_ws.deployments["ws"], only_ws.preflight.margin_gib)}
        _incident(store, ws["ws"], clock)
        loop.run(store, only_ws, ws, clock=clock)

        events = list(store.read())
        finished = {r.event.deployment: r.event for r in events if r.type == "RunFinished"}
        assert finished["old"].outcome == "escalated" and finished["ws"].outcome == "promoted"
        reasons = [r.event.reason for r in events if r.type == "EscalationRaised" and r.event.deployment == "old"]
        assert len(reasons) == 1 and "'old' is no longer configured" in reasons[0], reasons
        archived = {r.event.deployment: r.event.outcome for r in events if r.type == "IntentArchived"}
        assert archived == {"old": "escalated", "ws": "promoted"}
        # handled once: a second run records nothing more
        head = store.last_position()
        loop.run(store, only_ws, ws, clock=clock)
        assert store.last_position() == head
