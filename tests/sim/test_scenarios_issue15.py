"""Issue 15's "Done when" over every bundled scenario: each one's declared outcome (heal, escalate
with a reason, or leave a healthy deployment alone) is checked twice, against the simulator
(a witness config inside the bounds passes; for a hopeless one, no config of a grid over the
bounds does) and against selfheal's loop (`bench/tuning.py --outcomes-only`, one subprocess for
all scenarios), with at most 3 canaries a run and a median of at most 1.5 a heal.

The exhaustive fitness ratios (promoted >= 0.95 of the best inside the bounds) need the full
benchmark (minutes a scenario on two cores), so they are left to `python bench/tuning.py`.
"""
from __future__ import annotations

import itertools
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from selfheal.edges.sim import bundled_scenarios, load_scenario, simulate
from selfheal.handlers.models.scoring import score
from selfheal.handlers.ports import measurements_of
from selfheal.schemas.config import parse_settings

ROOT = Path(__file__).resolve().parents[2]

#: what must happen to each bundled scenario's production incident
DECLARED = {
    "a-llama8b-24gb": "heal",
    "a100-40-phi4-no-chunked-prefill": "heal",
    "a100-40-qwen32b-awq-healthy": "healthy",
    "a100-80-qwen32b-32k-floor": "heal",
    "a10g-llama8b-rag-preemption": "heal",
    "a10g-llama8b-tight-bounds": "heal",
    "a10g-mistral7b-tei-burst": "heal",
    "b-qwen7b-16gb": "escalate",
    "c-mistral7b-shared-24gb": "heal",
    "d-llama70b-awq-tp2-a6000": "healthy",
    "d-llama70b-awq-tp2-l40s": "heal",
    "fp8kv-llama8b-l4-64k": "heal",
    "h100-llama70b-fp8-128k": "heal",
    "h100-qwen7b-refused-long": "heal",
    "l4-gemma2-9b-window": "heal",
    "l4-llama8b-tei-whisper-prefill-f3": "heal",
    "l4-phi3-mini-comfyui": "heal",
    "l40s-gemma2-27b-hopeless": "escalate",
    "l40s-qwen14b-sdxl-preemption": "heal",
    "no-safe-fix": "escalate",
    "rt-preemption-storm-l4": "heal",
    "rt-refused-long-prompts-a10g": "heal",
    "rtx3090-qwen14b-awq-second-vllm": "heal",
    "rtx3090-qwen7b-whisper-f8": "heal",
    "rtx4060-llama32-3b-desktop": "heal",
    "rtx4060-qwen7b-bf16-hopeless": "escalate",
    "rtx4090-llama8b-fp8-healthy": "healthy",
    "rtx4090-llama8b-graphs-f6": "heal",
    "rtx4090-mistral-nemo-fp8-128k": "heal",
    "rtx4090-qwen32b-awq-f4": "heal",
    "sw-mistral7b-v01-rtx3090-comfyui": "heal",
    "t4-llama8b-awq-128k": "heal",
    "t4-qwen25-3b-bf16-refused": "escalate",
    "t4-qwen25-3b-fp16-whisper": "heal",
    "tp2-h100-llama70b-128k-floor-hopeless": "escalate",
    "tp2-l4-qwen14b-whisper": "heal",
    "tp4-a10g-llama70b-awq-128k": "heal",
    "tp4-l40s-qwen72b-preemption": "heal",
    "workstation-12gb-speech": "heal",
}

#: for each new scenario that heals, one config inside its bounds that passes (the older
#: scenarios' witnesses are in test_scenarios.py's EXPECTED)
WITNESS = {
    "a100-40-phi4-no-chunked-prefill": {"max_num_batched_tokens": 16384},
    "a100-80-qwen32b-32k-floor": {"gpu_memory_utilization": 0.95},
    "a10g-llama8b-rag-preemption": {"max_num_seqs": 12},
    "a10g-llama8b-tight-bounds": {"gpu_memory_utilization": 0.88},
    "a10g-mistral7b-tei-burst": {"gpu_memory_utilization": 0.85},
    "h100-llama70b-fp8-128k": {"gpu_memory_utilization": 0.95, "max_model_len": 16384},
    "h100-qwen7b-refused-long": {"max_model_len": 15360, "max_num_batched_tokens": 16384},
    "l4-gemma2-9b-window": {"gpu_memory_utilization": 0.95, "max_num_seqs": 2},
    "l4-llama8b-tei-whisper-prefill-f3": {"gpu_memory_utilization": 0.72, "max_num_batched_tokens": 512},
    "l4-phi3-mini-comfyui": {"gpu_memory_utilization": 0.7},
    "l40s-qwen14b-sdxl-preemption": {"gpu_memory_utilization": 0.8, "max_num_seqs": 12},
    "rtx3090-qwen14b-awq-second-vllm": {"gpu_memory_utilization": 0.61},
    "rtx3090-qwen7b-whisper-f8": {"gpu_memory_utilization": 0.74},
    "rtx4060-llama32-3b-desktop": {"gpu_memory_utilization": 0.86, "max_model_len": 3072},
    "rtx4090-llama8b-graphs-f6": {"gpu_memory_utilization": 0.95},
    "rtx4090-mistral-nemo-fp8-128k": {"gpu_memory_utilization": 0.95, "max_model_len": 57344},
    "rtx4090-qwen32b-awq-f4": {"gpu_memory_utilization": 0.94, "max_model_len": 13312},
    "t4-llama8b-awq-128k": {"max_model_len": 59392},
    "t4-qwen25-3b-fp16-whisper": {"gpu_memory_utilization": 0.68},
    "tp2-l4-qwen14b-whisper": {"gpu_memory_utilization": 0.74},
    "tp4-a10g-llama70b-awq-128k": {"max_model_len": 122880},
    "tp4-l40s-qwen72b-preemption": {"gpu_memory_utilization": 0.95, "max_num_seqs": 8},
}

#: misses of the targets whose cause lies outside the scenario (each says where); strict, so
#: the test fails the day the gap is closed and the entry must go
KNOWN_MISSES: dict[str, str] = {}

#: the fittest config within selfheal's two changes that `bench/tuning.py` found for each
#: scenario that heals (its best_within_2_changes; the exhaustive best may change more)
BEST_OF_TWO = {
    "a-llama8b-24gb": {"gpu_memory_utilization": 0.95, "max_model_len": 52224},
    "a100-40-phi4-no-chunked-prefill": {"gpu_memory_utilization": 0.95, "max_num_batched_tokens": 16384},
    "a100-80-qwen32b-32k-floor": {"gpu_memory_utilization": 0.95, "max_num_batched_tokens": 5632},
    "a10g-llama8b-rag-preemption": {"gpu_memory_utilization": 0.95, "max_num_batched_tokens": 8192},
    "a10g-llama8b-tight-bounds": {"gpu_memory_utilization": 0.88},
    "a10g-mistral7b-tei-burst": {"gpu_memory_utilization": 0.87, "max_num_seqs": 8},
    "c-mistral7b-shared-24gb": {"gpu_memory_utilization": 0.78, "max_num_seqs": 8},
    "d-llama70b-awq-tp2-l40s": {"gpu_memory_utilization": 0.95, "max_num_batched_tokens": 12288},
    "fp8kv-llama8b-l4-64k": {"gpu_memory_utilization": 0.95, "max_num_batched_tokens": 7168},
    "h100-llama70b-fp8-128k": {"gpu_memory_utilization": 0.95, "max_model_len": 16384},
    "h100-qwen7b-refused-long": {"max_model_len": 16384, "max_num_batched_tokens": 16384},
    "l4-gemma2-9b-window": {"gpu_memory_utilization": 0.95, "max_num_seqs": 2},
    "l4-llama8b-tei-whisper-prefill-f3": {"gpu_memory_utilization": 0.72, "max_num_batched_tokens": 512},
    "l4-phi3-mini-comfyui": {"gpu_memory_utilization": 0.73, "max_num_batched_tokens": 6656},
    "l40s-qwen14b-sdxl-preemption": {"gpu_memory_utilization": 0.8, "max_num_seqs": 12},
    "rt-preemption-storm-l4": {"gpu_memory_utilization": 0.95, "max_num_seqs": 8},
    "rt-refused-long-prompts-a10g": {"max_model_len": 6144, "max_num_batched_tokens": 8192},
    "rtx3090-qwen14b-awq-second-vllm": {"gpu_memory_utilization": 0.65, "max_num_seqs": 8},
    "rtx3090-qwen7b-whisper-f8": {"gpu_memory_utilization": 0.73, "max_num_batched_tokens": 7168},
    "rtx4060-llama32-3b-desktop": {"gpu_memory_utilization": 0.86, "max_model_len": 3072},
    "rtx4090-llama8b-graphs-f6": {"gpu_memory_utilization": 0.95, "max_num_batched_tokens": 4608},
    "rtx4090-mistral-nemo-fp8-128k": {"gpu_memory_utilization": 0.95, "max_model_len": 57344},
    "rtx4090-qwen32b-awq-f4": {"gpu_memory_utilization": 0.94, "max_model_len": 13312},
    "sw-mistral7b-v01-rtx3090-comfyui": {"gpu_memory_utilization": 0.78, "max_num_batched_tokens": 2560},
    "t4-llama8b-awq-128k": {"gpu_memory_utilization": 0.93, "max_model_len": 62464},
    "t4-qwen25-3b-fp16-whisper": {"gpu_memory_utilization": 0.61, "max_num_batched_tokens": 8192},
    "tp2-l4-qwen14b-whisper": {"gpu_memory_utilization": 0.8, "max_num_batched_tokens": 4096},
    "tp4-a10g-llama70b-awq-128k": {"gpu_memory_utilization": 0.94, "max_num_batched_tokens": 7168},
    "tp4-l40s-qwen72b-preemption": {"gpu_memory_utilization": 0.94, "max_num_batched_tokens": 7168},
    "workstation-12gb-speech": {"gpu_memory_utilization": 0.65, "max_num_batched_tokens": 1536},
}

#: promoted fitness below 0.95 of BEST_OF_TWO, and why
FITNESS_MISSES: dict[str, str] = {}

NEW = sorted(set(DECLARED) - {"a-llama8b-24gb", "b-qwen7b-16gb", "c-mistral7b-shared-24gb",
                               "d-llama70b-awq-tp2-a6000", "d-llama70b-awq-tp2-l40s", "no-safe-fix",
                               "rt-preemption-storm-l4", "rt-refused-long-prompts-a10g",
                               "sw-mistral7b-v01-rtx3090-comfyui", "fp8kv-llama8b-l4-64k",
                               "workstation-12gb-speech"})


def passes(scenario, config) -> bool:
    r = simulate(scenario, config, render=False)
    return r.started and r.passed_load


def test_every_bundled_scenario_is_declared():
    assert sorted(DECLARED) == bundled_scenarios()
    assert len(NEW) >= 20
    assert {DECLARED[n] for n in NEW} == {"heal", "escalate", "healthy"}
    assert sorted(n for n in NEW if DECLARED[n] == "heal") == sorted(WITNESS)


@pytest.mark.parametrize("name", NEW)
def test_the_declaration_holds_on_the_simulator(name):
    s = load_scenario(name)
    expected = DECLARED[name]
    assert passes(s, s.current) == (expected == "healthy")
    if expected == "heal":
        config = s.current.changed(**WITNESS[name])
        assert s.actuators.violations(config) == []
        assert passes(s, config), name
    elif expected == "escalate":
        b = s.actuators

        def few(act):
            grid = act.grid()
            return sorted({grid[0], grid[len(grid) // 2], grid[-1]})

        for util, seqs, mml, mnbt, eager in itertools.product(
                b.gpu_memory_utilization.grid(), few(b.max_num_seqs), few(b.max_model_len),
                few(b.max_num_batched_tokens), [False, True] if b.enforce_eager_allowed else [False]):
            config = s.current.changed(gpu_memory_utilization=util, max_num_seqs=seqs, max_model_len=mml,
                                       max_num_batched_tokens=mnbt, enforce_eager=eager)
            assert not passes(s, config), config


@pytest.fixture(scope="module")
def outcomes() -> dict:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "tuning.py"), "--outcomes-only"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)["scenarios"]


def _marked(name):
    if name in KNOWN_MISSES:
        return pytest.param(name, marks=pytest.mark.xfail(reason=KNOWN_MISSES[name], strict=True))
    return name


@pytest.mark.parametrize("name", [_marked(n) for n in sorted(DECLARED)])
def test_selfheal_reaches_the_declared_outcome(outcomes, name):
    ours = outcomes[name]
    assert ours["canaries"] <= 3, ours
    expected = DECLARED[name]
    if expected == "escalate":
        assert ours["outcome"] == "escalated" and ours["reason"].strip(), ours
    else:
        assert ours["outcome"] == {"heal": "promoted", "healthy": "healthy"}[expected], ours


def fitness(scenario, config) -> float:
    verdict = score(measurements_of(simulate(scenario, config, render=False)),
                    parse_settings("").preflight.margin_gib, config, scenario.current)
    return verdict.fitness if verdict.passed else 0.0


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.xfail(reason=FITNESS_MISSES[n], strict=True)) if n in FITNESS_MISSES else n
    for n in sorted(BEST_OF_TWO)])
def test_promoted_fitness_is_near_the_best_of_two_changes(outcomes, name):
    s = load_scenario(name)
    ours = outcomes[name]
    assert ours["outcome"] == "promoted", ours
    promoted = s.current.changed(**{k: new for k, (_, new) in ours["changes"].items()})
    best = s.current.changed(**BEST_OF_TWO[name])
    assert fitness(s, promoted) >= 0.95 * fitness(s, best), (promoted, best)


def test_median_canaries_per_heal(outcomes):
    canaries = [r["canaries"] for r in outcomes.values() if r["outcome"] == "promoted"]
    assert len(canaries) >= 20
    assert statistics.median(canaries) <= 1.5
    assert max(r["canaries"] for r in outcomes.values()) <= 3
