"""The §3 fixtures of vllm/memory_model.md, within the tolerances it states."""
from __future__ import annotations

from pathlib import Path

import pytest

from selfheal.edges.sim import load_scenario, parse_scenario, simulate
from selfheal.handlers.models.memory import GIB, account, capture_sizes, graph_counts, kv_bytes_per_token

A = "a-llama8b-24gb"
B = "b-qwen7b-16gb"
C = "c-mistral7b-shared-24gb"
D_A6000 = "d-llama70b-awq-tp2-a6000"
D_L40S = "d-llama70b-awq-tp2-l40s"


def run(name, **changes):
    s = load_scenario(name)
    return simulate(s, s.current.changed(**changes))


def test_kv_bytes_per_token_match_section_3():
    assert kv_bytes_per_token(load_scenario(A)) == 131_072        # 128 KiB
    assert kv_bytes_per_token(load_scenario(C)) == 131_072
    assert kv_bytes_per_token(load_scenario(B)) == 57_344         # 56 KiB
    assert kv_bytes_per_token(load_scenario(D_A6000)) == 163_840  # 160 KiB per GPU at TP2


def test_capture_sizes_match_section_1_9():
    assert len(capture_sizes(256, 2048)) == 51
    assert len(capture_sizes(64, 2048)) == 19      # max capture 128
    assert len(capture_sizes(32, 2048)) == 11      # max capture 64
    assert max(capture_sizes(256, 256)) == 256     # capped at max_num_batched_tokens
    s = load_scenario(A)
    assert graph_counts(s.current) == (51, 35)     # "PIECEWISE=51 (largest=512), FULL=35 (largest=256)"
    assert graph_counts(s.current.changed(enforce_eager=True)) == (0, 0)


def test_fixture_a_defaults_fail_f5_near_43k_tokens():
    s = load_scenario(A)
    st = account(s, s.current)
    w = st.workers[0]
    assert w.requested / GIB == pytest.approx(21.18, abs=0.01)
    assert w.activation / GIB == pytest.approx(0.29, abs=0.01)
    assert w.available_kv / GIB == pytest.approx(5.3, abs=0.5)
    assert st.failure.mode == "F5"
    assert st.estimated_max_len == pytest.approx(43_400, abs=4_000)
    assert st.needed_kv == 16 * GIB                 # 131072 tokens need 16.0 GiB


def test_fixture_a_fixes():
    r = run(A, max_model_len=32768)
    assert r.started and r.kv_cache_tokens == pytest.approx(43_400, abs=4_000)
    assert round(r.max_concurrency, 2) == 1.32
    eager = run(A, max_model_len=32768, enforce_eager=True)   # gains the 0.45 GiB graph estimate
    assert eager.available_kv_gib - r.available_kv_gib == pytest.approx(0.45, abs=0.01)
    assert eager.kv_cache_tokens == pytest.approx(47_000, abs=4_000)
    high = run(A, max_model_len=32768, gpu_memory_utilization=0.95)
    assert high.kv_cache_tokens == pytest.approx(53_000, abs=4_000)
    assert high.marginal and not r.marginal          # §1.10: F6 "most likely with util >= 0.95"


@pytest.mark.parametrize("util, mode", [(0.9, "F4"), (0.95, "F4"), (0.98, "F1")])
def test_fixture_b(util, mode):
    assert run(B, gpu_memory_utilization=util).failure_mode == mode


def test_fixture_b_fragile_corner_starts_but_is_marginal():
    r = run(B, gpu_memory_utilization=0.97, enforce_eager=True, max_num_seqs=32, max_num_batched_tokens=512,
            max_model_len=8192)
    assert r.started
    assert r.available_kv_gib == pytest.approx(0.66, abs=0.05)
    assert r.kv_cache_tokens == pytest.approx(12_000, abs=1_000)
    assert r.marginal


@pytest.mark.parametrize("util, tokens, concurrency", [(0.81, 39_000, 1.19), (0.80, 37_100, None),
                                                      (0.78, 33_200, 1.01)])
def test_fixture_c_util_table(util, tokens, concurrency):
    r = run(C, gpu_memory_utilization=util)
    assert r.started
    assert r.kv_cache_tokens == pytest.approx(tokens, abs=300)
    if concurrency is not None:
        assert round(r.max_concurrency, 2) == concurrency


def test_fixture_c_window():
    assert run(C).failure_mode == "F1"                               # util 0.9
    assert run(C, gpu_memory_utilization=0.82).failure_mode == "F1"
    assert run(C, gpu_memory_utilization=0.81).started               # the largest util that starts
    low = run(C, gpu_memory_utilization=0.77)
    assert low.failure_mode == "F5"
    assert low.estimated_max_model_len == pytest.approx(31_300, abs=300)
    assert run(C, gpu_memory_utilization=0.70, max_model_len=16384).started   # a shorter context widens it
    assert run(C).free_at_init_gib == pytest.approx(19.08, abs=0.005)


def test_fixture_c_headroom_is_what_the_cotenant_can_grow_into():
    r = run(C, gpu_memory_utilization=0.81)
    assert r.gpu_headroom_gib == pytest.approx(23.53 - 0.45 - 0.81 * 23.53 - 4.0, abs=0.005)
    assert r.failure_mode == "F8"                                    # the speech process grows 0.4 GiB
    for util in (0.78, 0.79):                                        # "prefer 0.78-0.79"
        ok = run(C, gpu_memory_utilization=util)
        assert ok.passed_load and ok.cotenant_slack_gib > 0.4


def test_fixture_d_a6000_healthy():
    r = run(D_A6000)
    assert r.started and r.passed_load
    assert r.kv_cache_tokens == pytest.approx(151_000, abs=4_000)
    assert round(r.max_concurrency, 2) == 1.15
    assert round(run(D_A6000, max_model_len=32768).max_concurrency, 1) == 4.6


def test_fixture_d_l40s_knife_edge():
    at_90 = run(D_L40S, gpu_memory_utilization=0.9)
    assert at_90.started and at_90.kv_cache_tokens == pytest.approx(132_700, abs=1_000)
    assert round(at_90.max_concurrency, 2) == 1.01
    assert run(D_L40S).failure_mode == "F5"                          # current: util 0.88


def test_tp_workers_take_the_min_of_blocks():
    """A co-tenant on GPU 1 only makes worker 1 fail the gate, on device cuda:1."""
    text = Path(load_scenario(D_A6000).source).read_text()
    s = parse_scenario(text.replace("[model]", '[[cotenants]]\nname = "embedder"\npid = 3300\nused_gib = 6.0\n'
                                               'gpu = 1\n\n[model]'), source="variant.toml")
    st = account(s, s.current)
    assert st.failure.mode == "F1" and st.failure.rank == 1
    ok = account(s, s.current.changed(gpu_memory_utilization=0.85))
    assert ok.ok and ok.num_blocks == min(w.num_blocks for w in ok.workers)
    r = simulate(s)
    assert "Free memory on device cuda:1 (40.83/47.53 GiB)" in r.excerpt
    assert r.excerpt.startswith("(Worker_TP1 pid=4311) ERROR")
