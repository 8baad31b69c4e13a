"""The vllm backend's load phase judged as production's /metrics watcher judges (issue 15.4, real side):
the fake vLLM server (a real subprocess, real HTTP on loopback) preempts, fills its KV cache or
refuses prompts, and the canary fails with production's symptom, or passes and says what it saw."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from selfheal.edges.vllm_backend import LoadSettings
from selfheal.handlers.models.scoring import score
from selfheal.handlers.observer import diagnose
from selfheal.schemas.serving import ServingConfig

T0 = datetime(2026, 11, 24, 6, 0, tzinfo=timezone.utc)
# workstation-12gb-speech: 12,240 KV tokens; the fake's KV usage is running x max_model_len / that
GOOD = ServingConfig(gpu_memory_utilization=0.65, max_model_len=8192, max_num_seqs=16, max_num_batched_tokens=2048)
ONE_AT_A_TIME = LoadSettings(requests=8, max_concurrency=1, max_tokens=8, request_timeout_s=10, deadline_s=30,
                             scrape_period_s=0.05)


def test_a_quiet_load_passes_and_says_what_it_saw(backend_for, canary_ids):
    out = backend_for(load=ONE_AT_A_TIME).run(GOOD, T0, canary_id=canary_ids())
    m = out.measurements
    assert m.started and m.passed_load and m.metrics_symptoms == ()
    # short and long prompts: the long ones up to max_model_len less the completion and 8 spare tokens
    assert m.prompt_tokens_max == 8192 - 8 - 8 and m.prompt_tokens_min == m.prompt_tokens_max // 16
    assert m.preemptions == 0 and m.preemptions_per_s == 0 and m.rejected_requests == 0
    assert 0 < m.peak_kv_usage < 0.98 and m.kv_full_share == 0     # one request at a time in 12,240 tokens
    assert m.load_s > 0 and m.startup_s > 0 and m.warm_start is None   # the fake compiles nothing
    assert len(m.metrics_symptoms) == 0 and "selfheal metrics:" not in out.log_text


def test_a_preemption_storm_fails_the_canary_with_the_watchers_line(backend_for, canary_ids):
    # one preemption per 2 finished requests: 4 in a load phase of well under a second, so served back
    # to back for the watcher's 5-minute window, far above its 0.1/s
    b = backend_for(env={"FAKE_VLLM_PREEMPT_EVERY": "2"}, load=ONE_AT_A_TIME)
    out = b.run(GOOD, T0, canary_id=canary_ids())
    m = out.measurements
    assert m.started and not m.passed_load and m.failure_kind == "preemption_storm" and m.failure_stage == "load"
    assert m.preemptions == 4 and m.preemptions_per_s > 0.1
    assert m.metrics_symptoms and m.metrics_symptoms[0].startswith(
        "selfheal metrics: sustained preemptions: vllm:num_preemptions_total rose by ")
    assert m.excerpt == m.metrics_symptoms[0]
    # the canary's output carries the line, so the observer reads production's finding from it
    assert out.log_text.endswith(m.metrics_symptoms[0] + "\n")
    assert diagnose(out.log_text, current=GOOD).primary.kind == "preemption_storm"
    assert not score(m, margin_gib=1.0).passed


def test_preemptions_below_the_watchers_rate_pass(backend_for, canary_ids):
    # the same server judged by a watcher that tolerates 1000 preemptions a second: measured, not failed
    from selfheal.edges.metrics_watch import MetricsWatch
    b = backend_for(env={"FAKE_VLLM_PREEMPT_EVERY": "2"}, load=ONE_AT_A_TIME,
                    watch=MetricsWatch(preemption_rate=1000))
    m = b.run(GOOD, T0, canary_id=canary_ids()).measurements
    assert m.passed_load and m.preemptions == 4 and m.metrics_symptoms == ()


def test_a_full_kv_cache_under_load_fails_as_kv_pressure(backend_for, canary_ids, monkeypatch):
    # four 8184-token sequences at once in 12,240 KV tokens: the fake reports the cache full all along
    import selfheal.edges.vllm_backend as vb
    monkeypatch.setattr(vb, "build_prompts", lambda config, load: [f"{i} " + "x " * 8175 for i in range(load.requests)])
    load = LoadSettings(requests=8, max_concurrency=4, max_tokens=8, request_timeout_s=10, deadline_s=30,
                        scrape_period_s=0.05)
    b = backend_for(env={"FAKE_VLLM_TOKEN_DELAY": "0.05"}, load=load)
    m = b.run(GOOD, T0, canary_id=canary_ids()).measurements
    assert not m.passed_load and m.failure_kind == "kv_cache_pressure", m.metrics_symptoms
    assert m.peak_kv_usage == 1.0 and m.kv_full_share > 0.5
    assert "sustained KV cache pressure: vllm:kv_cache_usage_perc at or above 0.98" in m.excerpt


def test_prompts_production_needs_longer_than_max_model_len_are_refusals(backend_for, canary_ids):
    # production's longest prompt (longest_prompt_tokens) stays what it is when a candidate shortens
    # max_model_len: the long prompts are refused (HTTP 400), and the canary fails as production did
    load = LoadSettings(requests=8, max_concurrency=2, max_tokens=8, longest_prompt_tokens=6000,
                        request_timeout_s=10, deadline_s=30)
    m = backend_for(load=load).run(GOOD.changed(max_model_len=4096), T0, canary_id=canary_ids()).measurements
    assert m.prompt_tokens_max == 6000 and m.prompt_tokens_min == 375
    assert m.rejected_requests == 2 and m.refusals_per_s > 0           # requests 0 and 4: the long ones
    assert not m.passed_load and m.failure_kind == "requests_rejected"
    assert "maximum context length is 4096 tokens" in m.excerpt


def test_the_compile_cache_is_production_s(backend_for, canary_ids, tmp_path):
    seen = {}

    def on_launch(launch):
        seen.update(item.split("=", 1) for item in
                    Path(f"/proc/{launch.pid}/environ").read_bytes().decode().split("\0") if "=" in item)

    b = backend_for(load=ONE_AT_A_TIME, compile_cache=tmp_path / "vllm-cache")
    assert b.run(GOOD, T0, on_launch, canary_id=canary_ids()).measurements.passed_load
    assert seen["VLLM_CACHE_ROOT"] == str(tmp_path / "vllm-cache")
    # a VLLM_CACHE_ROOT the deployment's env names wins over the default sharing
    b = backend_for(load=ONE_AT_A_TIME, compile_cache=tmp_path / "x", env={"VLLM_CACHE_ROOT": "/srv/cache"})
    assert b.env["VLLM_CACHE_ROOT"] == "/srv/cache"
