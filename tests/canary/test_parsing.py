"""What the backend reads: Prometheus text, vLLM's capacity lines, percentiles, load settings."""
from __future__ import annotations

import pytest

from selfheal.edges.sim import load_scenario, simulate
from selfheal.edges.vllm_backend import LoadSettings, parse_metrics, percentile, read_capacity, vllm_metrics

METRICS = """\
# HELP vllm:num_preemptions_total Cumulative number of preemption from the engine.
# TYPE vllm:num_preemptions_total counter
vllm:num_preemptions_total{engine="0",model_name="m"} 3.0
vllm:num_preemptions_total{engine="1",model_name="m"} 2.0
vllm:num_preemptions_created{engine="0",model_name="m"} 1.7e+09
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.75
vllm:num_requests_waiting{engine="0",model_name="weird } name"} 4
vllm:num_requests_running{engine="0",model_name="m"} 2 1700000000000
vllm:prompt_tokens_total{engine="0",model_name="m"} 1.5e3
vllm:generation_tokens_total{engine="0",model_name="m"} 640
process_open_fds 12
vllm:bad{engine="0"} NaNish
"""


def test_parse_metrics_combines_label_sets():
    parsed = parse_metrics(METRICS)
    assert parsed["vllm:num_preemptions_total"] == 5.0            # summed over engines
    assert parsed["vllm:kv_cache_usage_perc"] == 0.75             # a fraction: the highest engine
    assert parsed["process_open_fds"] == 12 and "vllm:bad" not in parsed
    assert vllm_metrics(parsed) == {"preemptions": 5.0, "kv_cache_usage": 0.75, "waiting": 4.0, "running": 2.0,
                                    "prompt_tokens": 1500.0, "generation_tokens": 640.0}


def test_older_metric_names():
    older = 'vllm:gpu_cache_usage_perc{model_name="m"} 0.5\nvllm:num_preemptions{model_name="m"} 7\n'
    got = vllm_metrics(parse_metrics(older))
    assert got["kv_cache_usage"] == 0.5 and got["preemptions"] == 7.0
    assert vllm_metrics({}) == dict.fromkeys(got, 0.0)


def test_the_simulators_metrics_parse():
    s = load_scenario("workstation-12gb-speech")
    r = simulate(s, s.current.changed(gpu_memory_utilization=0.65))
    got = vllm_metrics(parse_metrics(r.metrics_text))
    assert got["preemptions"] == r.preemptions and got["generation_tokens"] > 0


@pytest.mark.parametrize("log, expected", [
    ("(EngineCore pid=1) INFO 11-24 06:55:20 [kv_cache_utils.py:2146] GPU KV cache size: 43,392 tokens\n"
     "(EngineCore pid=1) INFO 11-24 06:55:20 [kv_cache_utils.py:2147] Maximum concurrency for 8,192 tokens per "
     "request: 5.30x\n(EngineCore pid=1) INFO [gpu_worker.py:515] Available KV cache memory: 4.97 GiB\n",
     (43392, 5.30, 4.97)),
    ("INFO 11-24 06:55:20 [kv_cache_utils.py:1087] CPU KV cache size: 174,720 tokens\n"
     "INFO 11-24 06:55:20 [kv_cache_utils.py:1091] Maximum concurrency for 4,096 tokens per request: 42.66x\n",
     (174720, 42.66, 0.0)),
    # merged into one line (0.33 on GPU; the 0.32 CPU build already prints it so, as the real tier shows)
    ("(EngineCore pid=1) INFO [kv_cache_utils.py:1300] GPU KV cache size: 43,392 tokens, Maximum concurrency for "
     "8,192 tokens per request: 5.30x\n", (43392, 5.30, 0.0)),
    ("(Worker pid=31278) INFO 11-24 07:44:37 [cpu_worker.py:260] Auto set (0.63/8.34) GiB for KV cache on node 0, "
     "with 1.25 GiB requested memory for the worker. 0.62 GiB memory was consumed by non-kv usages.\n"
     "(EngineCore pid=31266) INFO 11-24 07:44:37 [kv_cache_utils.py:2327] CPU KV cache size: 658,944 tokens, "
     "Maximum concurrency for 2,048 tokens per request: 321.75x\n", (658944, 321.75, 0.63)),
    # two workers (TP2): the smaller, as the simulator reports
    ("Available KV cache memory: 3.5 GiB\nAvailable KV cache memory: 3.25 GiB\n", (0, 0.0, 3.25)),
    ("nothing here\n", (0, 0.0, 0.0)),
])
def test_read_capacity(log, expected):
    assert read_capacity(log) == expected


def test_read_capacity_of_a_simulated_start():
    s = load_scenario("workstation-12gb-speech")
    r = simulate(s, s.current.changed(gpu_memory_utilization=0.65))
    kv, conc, avail = read_capacity(r.log_text)
    assert kv == r.kv_cache_tokens and conc == round(r.max_concurrency, 2) and avail == pytest.approx(
        r.available_kv_gib, abs=0.01)


def test_percentile():
    assert percentile([], 50) == 0.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert percentile(list(map(float, range(1, 101))), 99) == pytest.approx(99.01)


@pytest.mark.parametrize("bad", [dict(requests=0), dict(requests=10_001), dict(prompt_fraction=0),
                                 dict(prompt_fraction=1.5), dict(max_error_ratio=-0.1), dict(max_tokens=0),
                                 dict(deadline_s=0), dict(word="two words")])
def test_load_settings_are_bounded(bad):
    with pytest.raises(ValueError):
        LoadSettings(**bad)
