"""A warm canary start beside a cold one on a real vLLM server (issue 15.9): the canary shares
production's compile cache (VLLM_CACHE_ROOT), so a second start of the same model and vLLM version
finds the compiled graphs there. The durations are printed and written to
$SELFHEAL_TIMINGS_DIR/canary_warm.json when that is set; only the warm flag and both starts are asserted."""
from __future__ import annotations

import json
import uuid
import os
from datetime import datetime, timezone
from pathlib import Path

import pytest

from selfheal.edges.processes import marked_processes
from selfheal.edges.vllm_backend import LoadSettings, VllmCanaryBackend
from selfheal.schemas.serving import ServingConfig
from tests.realvllm.conftest import SERVER_ENV, server_command

pytestmark = pytest.mark.realvllm

# compiled, so not enforce_eager: the CPU build compiles the model with inductor (platforms/cpu.py)
COMPILED = ServingConfig(gpu_memory_utilization=0.15, max_model_len=2048, max_num_seqs=4,
                         max_num_batched_tokens=2048, enforce_eager=False)
LOAD = LoadSettings(requests=4, max_concurrency=2, prompt_fraction=0.25, max_tokens=8)


def test_a_canary_sharing_productions_compile_cache_starts_warm(real_env, tiny_model, tmp_path):
    command = [a for a in server_command(real_env) if a != "--enforce-eager"]
    cache = tmp_path / "vllm-cache"        # production's VLLM_CACHE_ROOT, empty: the first start is cold
    backend = VllmCanaryBackend(command, tiny_model, health_timeout_s=480, load=LOAD, env=SERVER_ENV, grace_s=15,
                                compile_cache=cache)
    ids = [f"test-warm-{uuid.uuid4().hex[:8]}" for _ in range(2)]   # this test's own canaries
    cold = backend.run(COMPILED, datetime.now(timezone.utc), canary_id=ids[0]).measurements
    # a utilization-only candidate: outside vLLM's compile hash (config/cache.py), so the same graphs
    warm_out = backend.run(COMPILED.changed(gpu_memory_utilization=0.2), datetime.now(timezone.utc), canary_id=ids[1])
    warm = warm_out.measurements
    timings = {"cold": {"startup_s": cold.startup_s, "duration_s": cold.duration_s, "warm_start": cold.warm_start},
               "warm": {"startup_s": warm.startup_s, "duration_s": warm.duration_s, "warm_start": warm.warm_start}}
    print("\ncanary start, cold against warm:", json.dumps(timings))
    if os.environ.get("SELFHEAL_TIMINGS_DIR"):
        Path(os.environ["SELFHEAL_TIMINGS_DIR"], "canary_warm.json").write_text(json.dumps(timings, indent=2))
    assert cold.started and cold.passed_load, cold.excerpt
    assert warm.started and warm.passed_load, warm.excerpt
    assert cold.warm_start is False and warm.warm_start is True, warm_out.log_text[-3000:]
    assert any((cache / "torch_compile_cache").iterdir())
    assert [pid for cid in ids for pid in marked_processes(cid)] == []
