"""The simulator's fast paths change no number.

The load model's decode stride takes the very steps the plain loop takes, and a predictor's
load memo hands out only schedules the scheduler would have computed again.

`run_load` strides over steady decoding (handlers/models/serving.py); `stride=False` visits
every step. On every bundled scenario and a grid of configurations around each one's
production config (tight KV caches that preempt, small batch budgets, eager mode, few and
many sequences, context lengths that refuse requests), the two give the same Load, float
for float, stats samples and finishes included.
"""
from __future__ import annotations

import itertools

import msgspec

from selfheal.edges.sim import bundled_scenarios, load_scenario, simulate
from selfheal.handlers.models.memory import account
from selfheal.handlers.models.serving import LoadMemo, run_load


def _configs(scenario):
    bounds, current = scenario.actuators.numeric(), scenario.current
    def spread(name, count):
        grid = bounds[name].grid()
        return sorted({grid[round(i * (len(grid) - 1) / (count - 1))] for i in range(count)})
    for util, seqs, length, batched, eager in itertools.product(
            spread("gpu_memory_utilization", 3), spread("max_num_seqs", 3), spread("max_model_len", 2),
            spread("max_num_batched_tokens", 2), (False, True)):
        yield current.changed(gpu_memory_utilization=util, max_num_seqs=seqs, max_model_len=length,
                              max_num_batched_tokens=batched, enforce_eager=eager)


def test_the_stride_changes_nothing():
    compared, preempting, refusing = {}, 0, 0
    for name in bundled_scenarios():
        scenario = load_scenario(name)
        for config in _configs(scenario):
            startup = account(scenario, config)
            if not startup.ok:
                continue  # never served: nothing to compare (b-qwen7b-16gb and no-safe-fix start nothing)
            plain = run_load(scenario, config, startup, stride=False)
            assert run_load(scenario, config, startup) == plain, (name, config)
            compared[name] = compared.get(name, 0) + 1
            preempting += plain.preemptions > 0
            refusing += plain.rejected_requests > 0
    # the grid reaches the stride's edges: five scenarios, caches tight enough to preempt, lengths that refuse
    assert len(compared) >= 5 and sum(compared.values()) >= 100, compared
    assert preempting and refusing, (preempting, refusing)


def test_a_quiet_simulation_measures_what_the_rendered_one_does():
    seen = set()
    for name in bundled_scenarios():
        scenario = load_scenario(name)
        for config in list(_configs(scenario))[::7]:
            loud, quiet = simulate(scenario, config), simulate(scenario, config, render=False)
            assert loud.log_text and not quiet.log_text and not quiet.excerpt and not quiet.metrics_text
            words = {"log_text": loud.log_text, "excerpt": loud.excerpt, "metrics_text": loud.metrics_text}
            assert msgspec.structs.replace(quiet, **words) == loud, (name, config)
            seen.add((loud.started, loud.passed_load))
    assert {(False, False), (True, True), (True, False)} <= seen, seen


def _grid(scenario):
    """_configs, and each again with KV caches a few percent apart and lengths that refuse the
    same requests: the neighbours a climb visits."""
    for config in _configs(scenario):
        yield config
        util = config.gpu_memory_utilization
        yield config.changed(gpu_memory_utilization=round(min(0.99, util + 0.02), 2))
        if config.max_model_len > 2048:
            yield config.changed(max_model_len=config.max_model_len - 1024)


def test_the_load_memo_changes_nothing():
    compared, reused, constrained = 0, 0, 0
    for name in bundled_scenarios():
        scenario = load_scenario(name)
        memo = LoadMemo(scenario)
        for config in _grid(scenario):
            startup = account(scenario, config)
            if not startup.ok:
                continue
            fresh = run_load(scenario, config, startup)
            hits = memo.hits
            assert run_load(scenario, config, startup, memo=memo) == fresh, (name, config)
            compared += 1
            reused += memo.hits > hits
            constrained += fresh.preemptions > 0
    # it was asked about loads that ran short of blocks and loads it had seen in another guise
    assert compared >= 200 and reused >= 50 and constrained, (compared, reused, constrained)


def test_a_memo_belongs_to_one_scenario():
    a, d = load_scenario("a-llama8b-24gb"), load_scenario("d-llama70b-awq-tp2-l40s")
    startup = account(d, d.current)
    try:
        run_load(d, d.current, startup, memo=LoadMemo(a))
    except ValueError as e:
        assert "a-llama8b-24gb" in str(e)
    else:
        raise AssertionError("a memo of another scenario was used")


def test_a_full_memo_forgets_and_still_answers():
    scenario = load_scenario("a-llama8b-24gb")
    memo = LoadMemo(scenario, limit=2)
    configs = [c for c in _configs(scenario) if account(scenario, c).ok][:6]
    for config in configs * 2:
        startup = account(scenario, config)
        assert run_load(scenario, config, startup, memo=memo) == run_load(scenario, config, startup)
    assert memo.misses > 2
