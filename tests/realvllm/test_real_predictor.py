"""The calibrated predictor against a real vLLM server (CPU build, tiny model; issue 15.5): one
start at one utilization calibrates it, and its KV-token prediction for another utilization is
within 10% of what the real server then reports."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from selfheal.edges.vllm_backend import LoadSettings, VllmCanaryBackend
from selfheal.handlers.models.calibration import StartFacts, calibrate, predict
from selfheal.handlers.observer.accounting import read_start
from selfheal.schemas.serving import ServingConfig
from tests.realvllm.conftest import SERVER_ENV, server_command
from tests.realvllm.test_real_vllm import no_canary_outlives_its_test  # noqa: F401 (autouse: no canary outlives a test)

pytestmark = pytest.mark.realvllm

# KV on the CPU backend = utilization x node memory - the worker's resident memory: two small
# utilizations keep the tier light, and differ enough that a wrong overhead shows
FIRST = ServingConfig(gpu_memory_utilization=0.10, max_model_len=2048, max_num_seqs=4,
                      max_num_batched_tokens=2048, enforce_eager=True)
SECOND = FIRST.changed(gpu_memory_utilization=0.14)
LOAD = LoadSettings(requests=2, max_concurrency=2, prompt_fraction=0.1, max_tokens=4)


def test_the_kv_tokens_predicted_for_another_utilization_are_within_10_percent(real_env, tiny_model):
    backend = VllmCanaryBackend(server_command(real_env), tiny_model, health_timeout_s=240, load=LOAD,
                                env=SERVER_ENV, grace_s=15)
    first = backend.run(FIRST, datetime.now(timezone.utc))
    assert first.measurements.started, first.log_text[-2000:]
    facts = StartFacts(source="first", config=FIRST, numbers=read_start(first.log_text),
                       measured_tokens=first.measurements.kv_cache_tokens)
    assert "cal_overhead_gib" in facts.numbers and "cal_cpu_kv_tokens" in facts.numbers, facts.numbers
    cal = calibrate([facts])
    made = predict(cal, SECOND)
    assert made.kv_tokens and made.kv_tokens > first.measurements.kv_cache_tokens, made

    second = backend.run(SECOND, datetime.now(timezone.utc))
    assert second.measurements.started, second.log_text[-2000:]
    measured = second.measurements.kv_cache_tokens
    error = (made.kv_tokens - measured) / measured
    print(f"\nreal predictor: calibrated at utilization {FIRST.gpu_memory_utilization} "
          f"({first.measurements.kv_cache_tokens} tokens), predicted {made.kv_tokens} tokens at "
          f"{SECOND.gpu_memory_utilization}, measured {measured}: error {error:+.2%} ({made.reason})")
    assert abs(error) <= 0.10
    assert made.low_tokens <= measured <= made.high_tokens
