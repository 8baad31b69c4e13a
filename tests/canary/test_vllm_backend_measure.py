"""What a real canary reads of vLLM's own output (issue 15.4, 15.9): headroom from its startup lines,
a warm start from its compile lines, and production's watcher over a measured load timeline.
The lines are vLLM 0.32's, as its CPU build printed them on this tier's tiny model, and as its GPU
worker formats them (vllm/v1/worker/gpu_worker.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from selfheal.edges.metrics_watch import MetricsWatch, Scrape
from selfheal.edges.vllm_measure import compile_cache_state, host_available_gib, read_headroom, watcher_symptoms

CPU_AUTO = ("(Worker pid=25784) INFO 12-06 04:31:14 [cpu_worker.py:260] Auto set (2.85/23.59) GiB for KV cache on "
            "node 0, with 3.54 GiB requested memory for the worker. 0.68 GiB memory was consumed by non-kv usages.")
CPU_EXPLICIT = "(Worker pid=1) INFO 12-06 04:31:14 [cpu_worker.py:230] Explicitly set (0.5/23.59) GiB for KV cache on node 0."
GPU = ("(Worker_TP0 pid=7) INFO 12-06 04:31:14 [gpu_worker.py:1034] Free memory on device (21.3/23.55 GiB) on startup. "
       "Desired GPU memory utilization is (0.8, 18.84 GiB). Actual usage is 6.2 GiB for consumed memory (weights + "
       "non-torch), 1.1 GiB for peak activation, and 0.4 GiB for CUDAGraph memory. Replace ...")
GPU_TP1 = GPU.replace("Worker_TP0", "Worker_TP1").replace("(21.3/", "(19.9/")
GPU_EXPLICIT = ("(Worker pid=7) INFO 12-06 04:31:14 [gpu_worker.py:669] Initial free memory 21.3 GiB, reserved 4.0 GiB "
                "memory for KV Cache as specified by kv_cache_memory_bytes config and skipped memory profiling.")
SAVED = ("(Worker pid=25784) INFO 12-06 04:31:13 [decorators.py:743] [backbone] saved AOT compiled function to "
         "/tmp/cache/torch_compile_cache/torch_aot_compile/ebaff77/rank_0_0/model")
RELOADED = ("(Worker pid=27014) WARNING 12-06 04:32:14 [decorators.py:333] [backbone] Compiling model again due to a "
            "load failure from /tmp/cache/torch_compile_cache/torch_aot_compile/ebaff77/rank_0_0/model, reason: "
            "'function' object has no attribute 'finalize_loading'")
GPU_WARM = ("(EngineCore pid=3) INFO 12-06 04:32:14 [backends.py:295] Directly load the compiled graph(s) for compile "
            "range (1, 8192) from the cache, took 1.234 s")
GPU_COLD = "(EngineCore pid=3) INFO 12-06 04:32:14 [backends.py:398] Compiling a graph for compile range (1, 8192) takes 31.20 s"


@pytest.mark.parametrize("log, available, rss, headroom, source", [
    # GPU: free at startup less what vLLM requested; with two workers the smaller
    (GPU, None, 0.0, 2.46, "free memory on device - requested memory"),
    (GPU + "\n" + GPU_TP1, None, 0.0, 1.06, "free memory on device - requested memory"),
    (GPU_EXPLICIT, None, 0.0, 17.3, "initial free memory - explicit KV cache memory"),
    # CPU: the host's available memory before the canary less the worker's request, or its RSS if larger
    (CPU_AUTO, 20.0, 1.0, 16.46, "vLLM CPU worker's requested memory"),
    (CPU_AUTO, 20.0, 4.73, 15.27, "vLLM CPU worker's requested memory"),
    (CPU_EXPLICIT, 20.0, 0.2, 19.5, "vLLM CPU worker's explicit KV space"),
    (CPU_AUTO, 3.0, 1.0, 0.0, "vLLM CPU worker's requested memory"),     # never below 0
    (CPU_AUTO, None, 1.0, 0.0, ""),                                       # no host figure: not measured
    ("INFO nothing about memory", 20.0, 1.0, 0.0, ""),
])
def test_headroom_is_read_from_what_the_server_printed(log, available, rss, headroom, source):
    got, where = read_headroom(log, available, rss)
    assert got == pytest.approx(headroom, abs=1e-3)
    assert (source in where) if source else where == ""


@pytest.mark.parametrize("log, warm", [
    (GPU_WARM, True), (GPU_COLD, False), (SAVED, False),
    (RELOADED + "\n" + SAVED, True),           # the CPU build found the artifact: inductor's cache serves the recompile
    (GPU_WARM + "\n" + GPU_COLD, True),
    ("INFO init engine (profile, create kv cache, warmup model) took 0.5 s", None),   # enforce_eager: nothing compiled
])
def test_a_warm_start_is_read_from_the_compile_lines(log, warm):
    assert compile_cache_state(log) is warm


def test_host_available_memory_reads_meminfo(tmp_path):
    (tmp_path / "meminfo").write_text("MemTotal:       24000000 kB\nMemAvailable:   2097152 kB\n")
    assert host_available_gib(tmp_path / "meminfo") == 2.0
    assert host_available_gib(tmp_path / "absent") is None
    assert host_available_gib(Path("/proc/meminfo")) > 0


def _pass(preempted: int, kv: float, refused: int = 0) -> list[Scrape]:
    """A 2-second load: baseline, two busy scrapes, the settled counters."""
    return [Scrape(t=0.0, preemptions=10.0, waiting=0.0, running=0.0, kv=0.0, refused=3.0),
            Scrape(t=0.5, preemptions=10.0, waiting=1.0, running=4.0, kv=kv, refused=3.0),
            Scrape(t=1.5, preemptions=10.0 + preempted, waiting=2.0, running=4.0, kv=kv, refused=3.0 + refused),
            Scrape(t=2.0, preemptions=10.0 + preempted, waiting=0.0, running=0.0, kv=0.0, refused=3.0 + refused)]


def test_the_watcher_judges_the_load_served_back_to_back():
    # no symptom: a counter that never rose since the baseline (10 before the load is not this load's)
    assert watcher_symptoms(_pass(0, 0.5)) == []
    # one preemption per 2-second pass is 0.5/s, above the watcher's 0.1/s
    (line,) = watcher_symptoms(_pass(1, 0.5))
    assert line.startswith("selfheal metrics: sustained preemptions: vllm:num_preemptions_total rose by 150 in 300 s")
    # the same load under a watcher that tolerates 1/s
    assert watcher_symptoms(_pass(1, 0.5), MetricsWatch(preemption_rate=1.0)) == []
    # refusals the same way; a KV cache full for most of the pass as pressure
    assert any("sustained request refusals" in x for x in watcher_symptoms(_pass(0, 0.5, refused=1)))
    assert any("sustained KV cache pressure" in x for x in watcher_symptoms(_pass(0, 0.99)))
    # nothing to judge without a timeline
    assert watcher_symptoms([]) == [] and watcher_symptoms(_pass(1, 0.5)[:1]) == []
