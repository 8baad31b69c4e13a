"""Healthy output, number formatting and determinism of the simulated server output."""
from __future__ import annotations

import re

import msgspec
import pytest
from freezegun import freeze_time

from selfheal.edges.sim import bundled_scenarios, load_scenario, simulate
from selfheal.edges.sim.logtext import format_gib, format_size

PREFIX = re.compile(r"^\((?:APIServer|EngineCore|Worker_TP\d) pid=\d+\) (?:(?:INFO|WARNING|ERROR) \d\d-\d\d "
                    r"\d\d:\d\d:\d\d \[[\w.]+:\d+\] |INFO:     )")

HEALTHY = [
    ("a-llama8b-24gb", {"max_model_len": 32768}),
    ("c-mistral7b-shared-24gb", {"gpu_memory_utilization": 0.78}),
    ("d-llama70b-awq-tp2-a6000", {}),
    ("workstation-12gb-speech", {"gpu_memory_utilization": 0.65}),
    ("a-llama8b-24gb", {"max_model_len": 32768, "enforce_eager": True}),
]


def run(name, **changes):
    s = load_scenario(name)
    return simulate(s, s.current.changed(**changes))


@pytest.mark.parametrize("b, text", [
    (round(19.08 * 2**30), "19.08"), (36 * 2**30, "36.0"), (round(3.6 * 2**30), "3.6"), (-round(2.14 * 2**30), "-2.14"),
    (round(5.3006 * 2**30), "5.3"),
])
def test_format_gib_is_str_of_round_2(b, text):
    assert format_gib(b) == text


@pytest.mark.parametrize("b, text", [
    (0, "0 bytes"), (1024, "1024 bytes"), (1025, "1.00 KiB"), (448 * 1024, "448.00 KiB"), (1048576, "1024.00 KiB"),
    (1048577, "1.00 MiB"), (round(605.88 * 2**20), "605.88 MiB"), (2**30, "1024.00 MiB"),
    (round(3.09 * 2**30), "3.09 GiB"),
])
def test_format_size_is_torch_format_size(b, text):
    assert format_size(b) == text


@pytest.mark.parametrize("name, changes", HEALTHY)
def test_healthy_start_prints_the_healthy_lines_and_no_error(name, changes):
    r = run(name, **changes)
    assert r.started and r.passed_load and r.failure_kind is None and r.excerpt == ""
    text = r.log_text
    tokens = re.search(r"\[kv_cache_utils\.py:\d+\] GPU KV cache size: ([\d,]+) tokens\n", text)
    assert tokens and int(tokens[1].replace(",", "")) == r.kv_cache_tokens
    assert re.fullmatch(r"\d{1,3}(,\d{3})*", tokens[1])                  # thousands separators
    mml = f"{r.config.max_model_len:,}"
    conc = re.search(rf"Maximum concurrency for {mml} tokens per request: (\d+\.\d\d)x\n", text)
    assert conc and float(conc[1]) == round(r.max_concurrency, 2)
    assert re.search(r"\] Available KV cache memory: \d+(\.\d{1,2})? GiB\n", text)
    assert re.search(r"\] Model loading took \d+(\.\d{1,2})? GiB memory and \d+\.\d{6} seconds\n", text)
    assert "Application startup complete." in text
    for bad in ("ERROR", "Traceback", "Error:", "out of memory", "ValueError"):
        assert bad not in text


def test_graph_lines_follow_enforce_eager():
    graphs = run("a-llama8b-24gb", max_model_len=32768).log_text
    assert "Profiling CUDA graph memory: PIECEWISE=51 (largest=512), FULL=35 (largest=256)" in graphs
    assert "Estimated CUDA graph memory: 0.45 GiB total" in graphs
    assert re.search(r"Graph capturing finished in \d+ secs, took 0\.46 GiB", graphs)
    assert ("The current --gpu-memory-utilization=0.9000 is equivalent to --gpu-memory-utilization=0.8809 without "
            "CUDA graph memory profiling.") in graphs
    eager = run("a-llama8b-24gb", max_model_len=32768, enforce_eager=True).log_text
    assert "CUDA graph" not in eager and "Graph capturing" not in eager
    assert "enforce_eager=True" in eager


def test_estimator_off_prints_the_warning_instead():
    text = run("workstation-12gb-speech", gpu_memory_utilization=0.65).log_text
    assert "WARNING" in text
    assert "CUDA graph memory profiling is disabled (VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=0)" in text
    assert "CUDA graph memory profiling is enabled" not in text


@pytest.mark.parametrize("name", bundled_scenarios())
def test_every_line_has_a_vllm_prefix(name):
    s = load_scenario(name)
    r = simulate(s)
    # a co-tenant's own OOM (F8 under load) is tagged with that co-tenant by the harness (edges/sim/loadlog.py)
    cotenants = tuple(f"({c.name} pid={c.pid}) " for c in s.cotenants)
    for line in r.log_text.splitlines():
        assert (PREFIX.match(line) or re.match(r"^\((?:APIServer|EngineCore|Worker_TP\d) pid=\d+\) ", line)
                or line.startswith(cotenants)), line


@pytest.mark.parametrize("name", bundled_scenarios())
def test_same_input_same_result(name):
    s = load_scenario(name)
    configs = [s.current, s.current.changed(gpu_memory_utilization=s.actuators.gpu_memory_utilization.min)]
    for c in configs:
        first = simulate(s, c)
        again = simulate(load_scenario(name), c)
        assert first == again
        assert msgspec.json.encode(first) == msgspec.json.encode(again)


def test_no_wall_clock():
    s = load_scenario("c-mistral7b-shared-24gb")
    c = s.current.changed(gpu_memory_utilization=0.78)
    with freeze_time("2020-01-01 00:00:00"):
        early = simulate(s, c)
    with freeze_time("2031-06-30 23:59:59"):
        late = simulate(s, c)
    assert early == late
    assert "11-24 06:55:00" in early.log_text                          # the fixed fake date


def test_results_are_marked_simulated():
    for name in bundled_scenarios():
        assert simulate(load_scenario(name)).simulated is True
