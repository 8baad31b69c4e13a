"""The vllm canary backend against the fake vLLM server: real subprocesses, real HTTP on loopback.

The fake takes its hardware from the simulator scenario workstation-12gb-speech, so the
expected numbers (KV tokens, concurrency, failure kinds) are the simulator's.
"""
from __future__ import annotations

import http.client
import os
from datetime import datetime, timezone

import msgspec
import pytest

from selfheal.handlers.ports import CanaryBackend, Launch
from selfheal.edges.processes import carries_marker, marked_processes
from selfheal.edges.sim import load_scenario, simulate
from selfheal.edges.vllm_backend import LoadSettings, VllmCanaryBackend, build_prompts
from selfheal.schemas.serving import ServingConfig

from .conftest import FAST_LOAD

T0 = datetime(2026, 11, 24, 6, 0, tzinfo=timezone.utc)
GOOD = ServingConfig(gpu_memory_utilization=0.65, max_model_len=8192, max_num_seqs=16, max_num_batched_tokens=2048)


def test_is_a_canary_backend(backend_for):
    b = backend_for()
    assert isinstance(b, VllmCanaryBackend) and b.name == "vllm" and b.simulated is False
    _: CanaryBackend = b


def test_passing_candidate_is_measured(backend_for, canary_ids):
    # the counter starts at 5 and the fake preempts once per 2 finished requests: 8 requests -> 4
    # (a storm by the watcher's rate, which fails the candidate: test_vllm_backend_load.py; here, measured only)
    b = backend_for(env={"FAKE_VLLM_PREEMPTIONS_BASE": "5", "FAKE_VLLM_PREEMPT_EVERY": "2"},
                    load=msgspec.structs.replace(FAST_LOAD, watch=False))
    cid = canary_ids()
    out = b.run(GOOD, T0, canary_id=cid)
    m, sim = out.measurements, simulate(load_scenario("workstation-12gb-speech"), GOOD)
    assert m.started and m.passed_load and m.failure_kind is None and m.failure_stage is None
    assert m.kv_cache_tokens == sim.kv_cache_tokens == 12240            # "GPU KV cache size: 12,240 tokens"
    assert m.max_concurrency == round(sim.max_concurrency, 2)           # "Maximum concurrency ...: 1.49x"
    assert m.available_kv_gib > 0
    assert m.throughput_tok_s > 0 and m.requests_per_s > 0
    assert 0 < m.ttft_p50_ms <= m.latency_p50_ms <= m.latency_p99_ms
    assert m.preemptions == 4
    assert m.peak_memory_gib > 0 and m.gpu_headroom_gib == 0.0
    assert 0 < m.duration_s < 30
    assert abs((out.finished_at - T0).total_seconds() - m.duration_s) < 0.01   # started_at + the canary's duration
    d = b.last_run
    assert d.load.ok == 8 and d.load.failed == 0 and d.load.completion_tokens == 8 * 8
    assert d.stopped_by == "SIGTERM" and d.exit_code is None
    assert out.command == d.argv and out.command[-len(GOOD.cli_args()):] == GOOD.cli_args()
    assert out.command[out.command.index("--port") + 1] == str(d.port)
    assert "Application startup complete." in out.log_text
    assert out.log_text.count('"POST /v1/completions HTTP/1.1" 200 OK') == 8
    assert f"http://127.0.0.1:{d.port}" in out.log_text                # the fake reports the port it serves
    assert marked_processes(cid) == []


def test_startup_failure_is_diagnosed(backend_for, canary_ids):
    out = backend_for().run(GOOD.changed(gpu_memory_utilization=0.9), T0, canary_id=canary_ids())
    m = out.measurements
    assert not m.started and not m.passed_load
    assert m.failure_kind == "startup_free_memory_below_utilization" and m.failure_stage == "startup"
    assert "Free memory on device cuda:0" in m.excerpt and m.excerpt in out.log_text
    assert m.throughput_tok_s == 0 and m.kv_cache_tokens == 0
    assert "Traceback" in out.log_text


def test_config_error_is_a_config_stage_failure(backend_for, canary_ids):
    b = backend_for()
    out = b.run(GOOD.changed(max_model_len=200_000), T0, canary_id=canary_ids())
    m = out.measurements
    assert (m.started, m.failure_kind, m.failure_stage) == (False, "other_config_error", "config")
    assert "max_model_len (200000)" in m.excerpt
    assert b.last_run.exit_code == 1 and b.last_run.stopped_by == "none"


def test_crash_mid_load_fails_the_load_phase(backend_for, canary_ids):
    b = backend_for(env={"FAKE_VLLM_CRASH_AFTER_REQUESTS": "3"})
    cid = canary_ids()
    out = b.run(GOOD, T0, canary_id=cid)
    m = out.measurements
    assert m.started and not m.passed_load
    assert (m.failure_kind, m.failure_stage) == ("load_errors", "load")
    assert "server exited (code 1)" in m.excerpt and "requests failed" in m.excerpt
    assert "EngineDeadError" in out.log_text
    assert b.last_run.load.server_died and b.last_run.load.ok <= 3
    assert m.kv_cache_tokens == 12240          # what startup showed is kept as evidence
    assert marked_processes(cid) == []


def test_prompts_stay_within_the_fraction_of_max_model_len(backend_for, canary_ids):
    config = GOOD.changed(max_model_len=1024)
    for load in (FAST_LOAD, LoadSettings(requests=8, max_tokens=8, prompt_fraction=1.0)):
        words = [len(p.split()) for p in build_prompts(config, load)]
        assert max(words) <= min(load.prompt_fraction * 1024, 1024 - load.max_tokens - 8)
        assert max(words) >= 0.9 * min(load.prompt_fraction * 1024, 1024 - load.max_tokens - 8)  # it does go up there
        assert len(set(p.split()[0] for p in build_prompts(config, load))) == load.requests  # no shared prefix
    # the fake server counts a word as a token and answers 400 above max_model_len: no request is refused
    b = backend_for(load=LoadSettings(requests=8, max_concurrency=4, max_tokens=8, prompt_fraction=1.0))
    out = b.run(config, T0, canary_id=canary_ids())
    assert out.measurements.passed_load, out.measurements.excerpt
    assert "400 Bad Request" not in out.log_text


def test_overlong_prompts_fail_with_vllms_wording(backend_for, canary_ids, monkeypatch):
    # prove the rule above has teeth: prompts over max_model_len are refused, and that fails the load phase
    import selfheal.edges.vllm_backend as vb
    monkeypatch.setattr(vb, "build_prompts", lambda config, load: ["x " * 1100] * load.requests)
    b = backend_for(load=LoadSettings(requests=4, max_concurrency=4, max_tokens=8, max_error_ratio=0.5))
    m = b.run(GOOD.changed(max_model_len=1024), T0, canary_id=canary_ids()).measurements
    # every failure a refusal for length: production's refusal symptom (test_vllm_backend_load.py)
    assert m.started and not m.passed_load and m.failure_kind == "requests_rejected" and m.rejected_requests == 4
    assert "4 of 4 requests failed" in m.excerpt
    assert "HTTP 400: This model's maximum context length is 1024 tokens. However, you requested 1108 tokens" \
        in m.excerpt


def test_health_timeout_stops_the_canary(backend_for, canary_ids):
    cid = canary_ids()
    b = backend_for(env={"FAKE_VLLM_STARTUP_DELAY": "30", "FAKE_VLLM_SPAWN_CHILD": "1"}, health_timeout_s=1.0)
    m = b.run(GOOD, T0, canary_id=cid).measurements
    assert (m.started, m.passed_load, m.failure_kind, m.failure_stage) == (False, False, "health_timeout", "startup")
    assert "/health did not answer 200 within 1 s" in m.excerpt
    assert m.duration_s < 10
    assert b.last_run.stopped_by == "SIGTERM"
    assert marked_processes(cid) == []


def test_on_launch_hears_of_the_real_process_before_it_is_healthy(backend_for, canary_ids):
    cid = canary_ids()
    seen: list[tuple] = []

    def on_launch(launch: Launch) -> None:
        # the process exists, leads its own group and carries the marker ...
        assert launch.pgid == os.getpgid(launch.pid) == launch.pid
        assert carries_marker(launch.pid, cid)
        # ... and does not serve yet (it is still "loading the model")
        conn = http.client.HTTPConnection("127.0.0.1", launch.port, timeout=1)
        with pytest.raises(OSError):
            conn.request("GET", "/health")
        seen.append((launch.pid, launch.pgid, launch.port, launch.command))

    b = backend_for(env={"FAKE_VLLM_STARTUP_DELAY": "0.5"})
    out = b.run(GOOD, T0, on_launch=on_launch, canary_id=cid)
    assert out.measurements.passed_load
    d = b.last_run
    assert seen == [(d.pid, d.pgid, d.port, out.command)]


def test_a_failing_on_launch_still_stops_the_canary(backend_for, canary_ids):
    cid = canary_ids()

    def on_launch(launch: Launch) -> None:
        raise RuntimeError("the store is down")

    b = backend_for(env={"FAKE_VLLM_SPAWN_CHILD": "1"})
    with pytest.raises(RuntimeError, match="the store is down"):
        b.run(GOOD, T0, on_launch=on_launch, canary_id=cid)
    assert marked_processes(cid) == []


class _Watching(VllmCanaryBackend):
    """Counts the canary's marked processes while it serves (before the load phase)."""

    during: list[int] = []

    def _measure_load(self, child, config, details):
        self.during = marked_processes(child.canary_id)
        super()._measure_load(child, config, details)


@pytest.mark.parametrize("ignore_sigterm, stopped_by", [("0", "SIGTERM"), ("1", "SIGKILL")])
def test_the_whole_group_is_stopped(backend_for, canary_ids, ignore_sigterm, stopped_by):
    # the fake spawns a grandchild in its group; with SIGTERM ignored (by both) only SIGKILL ends them
    proto = backend_for(env={"FAKE_VLLM_SPAWN_CHILD": "1", "FAKE_VLLM_IGNORE_SIGTERM": ignore_sigterm}, grace_s=0.5)
    b = _Watching(proto.command, proto.model, env=proto.env, load=proto.load, grace_s=0.5)
    cid = canary_ids()
    out = b.run(GOOD, T0, canary_id=cid)
    assert out.measurements.passed_load
    assert len(b.during) == 2                 # the server and its grandchild, both marked
    assert b.last_run.stopped_by == stopped_by
    assert marked_processes(cid) == []


def test_a_fresh_canary_id_is_made_when_none_is_given(backend_for):
    b = backend_for()
    b.run(GOOD.changed(gpu_memory_utilization=0.9), T0)
    cid = b.last_run.canary_id
    assert cid and marked_processes(cid) == []


def test_command_template():
    b = VllmCanaryBackend(["vllm", "serve", "{model}", "--host", "{host}", "--port", "{port}",
                           "--override-generation-config", '{"temperature": 0}'], "org/m", host="127.0.0.1")
    assert b.argv(GOOD, 8123) == ["vllm", "serve", "org/m", "--host", "127.0.0.1", "--port", "8123",
                                  "--override-generation-config", '{"temperature": 0}', *GOOD.cli_args()]
    assert VllmCanaryBackend(None, "m").command == ["vllm", "serve", "{model}", "--host", "{host}", "--port", "{port}"]
    with pytest.raises(TypeError):
        VllmCanaryBackend("vllm serve m", "m")
