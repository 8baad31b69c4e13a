"""IncidentChunker: real vLLM logs fed line by line, with deterministic stream times."""
from __future__ import annotations

from pathlib import Path

import pytest

from selfheal.edges.chunker import IncidentChunker, _literals, is_restart, is_trouble
from selfheal.handlers.observer import diagnose

SAMPLES = Path(__file__).parent.parent / "observer" / "samples"
FAILING = sorted(p.name for p in SAMPLES.glob("failing_*.log"))


def lines_of(name: str) -> list[str]:
    return (SAMPLES / name).read_text().splitlines()


def run(chunker: IncidentChunker, lines: list[str], start: float = 0.0, step: float = 0.01) -> tuple[list[str], float]:
    out, now = [], start
    for line in lines:
        out += chunker.feed(line, now)
        now += step
    return out, now


@pytest.mark.parametrize("name", FAILING)
def test_a_failing_startup_log_yields_one_incident_that_diagnoses_like_the_whole_log(name):
    chunker = IncidentChunker(quiet_s=2.0)
    out, now = run(chunker, lines_of(name))
    assert out == []                       # still collecting: the log has not been quiet yet
    assert chunker.tick(now + 1.0) == []
    incidents = chunker.tick(now + 2.5)
    assert len(incidents) == 1 and chunker.flush() == []
    whole = diagnose((SAMPLES / name).read_text()).primary
    assert whole is not None
    found = diagnose(incidents[0]).primary
    assert (found.kind, found.fix) == (whole.kind, whole.fix)


def test_the_incident_holds_the_error_and_the_context_before_it():
    lines = lines_of("failing_startup_kv_v1.log")
    chunker = IncidentChunker(quiet_s=2.0)
    run(chunker, lines)
    (text,) = chunker.flush()
    first_error = next(i for i, line in enumerate(lines) if is_trouble(line))
    assert "EngineCore failed to start." in lines[first_error]
    assert text.splitlines() == lines      # all 7 lines of context, then everything from the error on
    assert first_error == 7
    assert "Available KV cache memory: 2.92 GiB" in text and "estimated maximum model length is 23920" in text


def test_context_is_bounded_by_context_lines():
    lines = lines_of("failing_startup_kv_v1.log")
    chunker = IncidentChunker(context_lines=3)
    run(chunker, lines)
    (text,) = chunker.flush()
    assert text.splitlines() == lines[4:]


def test_a_healthy_log_yields_nothing():
    chunker = IncidentChunker(quiet_s=2.0)
    out, now = run(chunker, lines_of("healthy_startup_v1.log"))
    assert out == [] and chunker.tick(now + 60) == [] and chunker.flush() == []
    # and an endless stream of healthy request logs neither
    request = ('(APIServer pid=99) INFO 11-24 06:56:01 [loggers.py:123] Engine 000: Avg prompt throughput: '
               '120.3 tokens/s, Running: 3 reqs, Waiting: 0 reqs, GPU KV cache usage: 12.5%')
    assert run(chunker, [request] * 5000, start=now, step=3.0)[0] == []


def test_two_failures_separated_by_a_quiet_gap_are_two_incidents():
    first, second = lines_of("failing_startup_kv_v1.log"), lines_of("failing_sampler_oom_v1.log")
    chunker = IncidentChunker(quiet_s=2.0)
    out, now = run(chunker, first)
    out2, now = run(chunker, second, start=now + 30)    # a restart 30 s later: the quiet closed the first
    assert len(out + out2) == 1
    out3 = chunker.tick(now + 5)
    incidents = out + out2 + out3
    assert len(incidents) == 2
    assert diagnose(incidents[0]).primary.kind == "max_model_len_exceeds_kv_cache"
    assert diagnose(incidents[1]).primary.kind == "cuda_oom_allocation"
    assert "max seq len" not in incidents[1]            # no line is recorded twice


def test_an_engine_restart_closes_the_incident_without_waiting_for_quiet():
    first, second = lines_of("failing_startup_kv_v1.log"), lines_of("failing_sampler_oom_v1.log")
    assert is_restart(second[0])
    chunker = IncidentChunker(quiet_s=60.0)
    out, now = run(chunker, first + second)              # back to back, never quiet
    assert len(out) == 1 and "estimated maximum model length" in out[0]
    (last,) = chunker.flush()
    assert last.splitlines()[0] == second[0]            # the restart line begins the next context


def test_trouble_literals():
    assert is_trouble("(EngineCore_DP0 pid=5123) ERROR 11-24 06:55:48 [core.py:708] EngineCore failed to start.")
    assert is_trouble("ERROR:    Exception in ASGI application")
    assert is_trouble("CRITICAL:root:boom")
    assert is_trouble("Traceback (most recent call last):")
    assert is_trouble("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB")
    assert is_trouble("(EngineCore_DP0 pid=5123) RuntimeError: Engine core initialization failed.")
    assert is_trouble("WARNING 01-02 03:04:09 x.py:1] No available memory for the cache blocks.")  # a rule's literal
    assert is_trouble("selfheal metrics: sustained preemptions: vllm:num_preemptions_total rose by 57 in 300 s")
    assert not is_trouble("INFO 11-24 06:55:48 [gpu_worker.py:298] Available KV cache memory: 2.92 GiB")
    assert not is_trouble("INFO 11-24 06:55:48 [serving.py:1] client sent a request; ValueError: handled")
    assert not is_trouble("INFO 11-24 06:55:48 [x.py:1] counters: ERRORS_TOTAL=0 error_rate=0")
    assert not is_trouble("Error: ")


def test_a_server_that_keeps_serving_after_an_error_does_not_grow_the_incident_forever():
    chunker = IncidentChunker(quiet_s=2.0, context_lines=10, after_lines=10)
    healthy = "INFO 11-24 06:56:01 [loggers.py:123] Running: 3 reqs"
    out, now = run(chunker, [healthy] * 20 + ["ERROR 11-24 06:56:02 [serving.py:1] request failed"] + [healthy] * 30)
    assert len(out) == 1
    assert out[0].splitlines() == [healthy] * 10 + ["ERROR 11-24 06:56:02 [serving.py:1] request failed"] + [healthy] * 10
    assert chunker.flush() == []


def test_max_bytes_bounds_the_incident_text():
    chunker = IncidentChunker(max_bytes=100, context_lines=50)
    out, now = run(chunker, [f"INFO context {i}" for i in range(50)] + ["ERROR x.py:1] boom " + "!" * 30])
    (text,) = chunker.flush()
    assert len(text.encode()) <= 100
    assert text.endswith("!" * 30) and text.splitlines()[0].startswith("INFO context")
    chunker = IncidentChunker(max_bytes=1000)
    out, _ = run(chunker, ["ERROR huge " + "\u00e9" * 5000])
    assert len(out) == 1 and len(out[0].encode()) <= 1000 and out[0].startswith("ERROR huge")


def test_rejects_nonsense_settings():
    with pytest.raises(ValueError):
        IncidentChunker(quiet_s=0)
    with pytest.raises(ValueError):
        IncidentChunker(after_lines=0)


HEALTHY = sorted([*SAMPLES.glob("healthy_*.log"), *SAMPLES.glob("real/healthy*.log")])


@pytest.mark.parametrize("path", HEALTHY, ids=[p.name for p in HEALTHY])
def test_no_line_of_a_healthy_start_holds_a_trouble_literal(path):
    # a stated rule's literal is trouble on sight: one that a healthy start prints too (the startup
    # check's hint, "Free memory on device (...) on startup", beside the error's first clause) would
    # open an incident on every start (a real server's shutdown logs ERROR lines: levels aside)
    literals = _literals()[0]
    assert [(lit, line) for line in path.read_text().splitlines() for lit in literals if lit in line] == []
