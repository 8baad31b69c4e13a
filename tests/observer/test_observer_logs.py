"""Whole logs, log prefixes, hard-wrapped pastes, and the choice of the primary finding."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from selfheal.handlers.observer import diagnose, format_diagnosis
from selfheal.handlers.observer.normalize import _SOFT_START as SOFT_START, strip_prefix
from selfheal.schemas.serving import ServingConfig

SAMPLES = Path(__file__).parent / "samples"

STARTUP = ("ValueError: Free memory on device (9.8/11.6 GiB) on startup is less than desired GPU memory utilization "
           "(0.9, 10.44 GiB). Decrease GPU memory utilization or reduce GPU memory used by other processes.")
STARTUP_014 = ("ValueError: Free memory on device cuda:0 (9.8/11.6 GiB) on startup is less than desired GPU memory "
               "utilization (0.9, 10.44 GiB). Decrease GPU memory utilization or reduce GPU memory used by other "
               "processes.")
NO_KV = ("ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when "
         "initializing the engine. See https://docs.vllm.ai/en/latest/configuration/conserving_memory/ for more "
         "details.")
MML = ("ValueError: To serve at least one request with the models's max seq len (32768), (4.00 GiB KV cache is "
       "needed, which is larger than the available KV cache memory (2.50 GiB). Based on the available memory, the "
       "estimated maximum model length is 20480. Try increasing `gpu_memory_utilization` or decreasing "
       "`max_model_len` when initializing the engine.")
MML_NO_EST = ("ValueError: To serve at least one request with the models's max seq len (32768), (4.00 GiB KV cache "
              "is needed, which is larger than the available KV cache memory (2.50 GiB).  Try increasing "
              "`gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine.")
OOM = ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.95 GiB. GPU 0 has a total capacity of "
       "79.19 GiB of which 3.09 GiB is free. Including non-PyTorch memory, this process has 76.09 GiB memory in use.")

EXPECT = {
    STARTUP: ("startup_free_memory_below_utilization", {"gpu_memory_utilization": 0.75}),
    STARTUP_014: ("startup_free_memory_below_utilization", {"gpu_memory_utilization": 0.75}),
    NO_KV: ("no_kv_cache_memory", {"gpu_memory_utilization": 0.85}),
    MML: ("max_model_len_exceeds_kv_cache", {"max_model_len": 20480}),
    MML_NO_EST: ("max_model_len_exceeds_kv_cache", {"max_model_len": 18432}),
    OOM: ("cuda_oom_allocation", {"gpu_memory_utilization": 0.75}),
}
PREFIXES = [
    "",
    "(EngineCore_DP0 pid=5123) ERROR 11-24 06:55:12 [core.py:708] ",
    "ERROR 01-02 03:04:05 [core.py:700] ",
    "ERROR 01-02 03:04:05 llm_engine.py:275] ",
    "(VllmWorker rank=0 pid=812) ERROR 11-24 06:55:12 [multiproc_executor.py:511] ",
    "(VllmWorker TP0 pid=812) ERROR 11-24 06:55:12 [v1/worker/gpu_worker.py:231] ",
    "(RayWorkerWrapper pid=1234, ip=10.0.0.2) ERROR 11-24 06:55:12 [worker_base.py:620] ",
    "[rank0]: ",
    "2025-11-24T06:55:12.123456789Z (APIServer pid=99) ",
    "\x1b[1;36m(EngineCore_DP0 pid=5123)\x1b[0;0m ERROR 11-24 06:55:12 [core.py:708] ",
    "ERROR:root:",
]
CURRENT = ServingConfig(gpu_memory_utilization=0.8)


def hard_fold(text: str, width: int) -> str:
    """A terminal's wrap: exactly `width` characters per line, words cut anywhere."""
    return "\n".join(text[i:i + width] for i in range(0, len(text), width))


def paste_wrap(text: str, width: int) -> str:
    """An issue paste / editor reflow: breaks at spaces, the space is dropped."""
    return "\n".join(textwrap.wrap(text, width, break_on_hyphens=False))


def paste_wrap_keep(text: str, width: int) -> str:
    """`fold -s`: breaks at spaces, the space kept at the end of the line, continuation indented."""
    lines = textwrap.wrap(text, width, break_on_hyphens=False, drop_whitespace=False)
    return "\n".join(lines[:1] + ["    " + x for x in lines[1:]])


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("message", list(EXPECT), ids=["startup", "startup014", "nokv", "mml", "mml_noest", "oom"])
def test_prefixed_message(prefix, message):
    line = prefix + message
    d = diagnose("INFO 11-24 06:55:00 [x.py:1] starting\n" + line + "\n", current=CURRENT)
    kind, fix = EXPECT[message]
    assert d.primary.kind == kind
    assert d.primary.fix == fix
    assert d.primary.line == 2
    assert d.primary.evidence[0] == line.replace("\x1b[1;36m", "").replace("\x1b[0;0m", "")


@pytest.mark.parametrize("wrap", [hard_fold, paste_wrap, paste_wrap_keep])
@pytest.mark.parametrize("width", [60, 72, 80, 100, 120])
@pytest.mark.parametrize("prefix", PREFIXES[:3])
@pytest.mark.parametrize("message", list(EXPECT), ids=["startup", "startup014", "nokv", "mml", "mml_noest", "oom"])
def test_hard_wrapped_paste(message, prefix, width, wrap):
    wrapped = wrap(prefix + message, width)
    physical = wrapped.split("\n")
    assert len(physical) >= 2
    text = "INFO 11-24 06:55:00 [x.py:1] before\n" + wrapped + "\nINFO 11-24 06:55:30 [x.py:2] after\n"
    d = diagnose(text, current=CURRENT)
    kind, fix = EXPECT[message]
    assert [f.kind for f in d.findings] == [kind]
    assert d.primary.fix == fix
    # evidence is the original physical lines of the message, from its first line; the one
    # exception by design: a physical line that starts with an exception name ("MemoryError: "
    # when a fold cut "torch.OutOfMemoryError") after a complete header+message line starts a record
    first = next((i for i, x in enumerate(physical) if i and SOFT_START.match(x)
                  and strip_prefix(physical[i - 1])[1].strip()), 0)
    assert d.primary.line == 2 + first
    assert d.primary.evidence == physical[first: first + len(d.primary.evidence)]
    assert d.primary.evidence[-1] == physical[-1] or message == OOM  # the OOM pattern stops at "is free."


def test_wrapped_numbers_keep_their_exact_values():
    text = hard_fold(MML, 80)
    assert "\n" in text and diagnose(text).primary.numbers == {
        "max_model_len": 32768, "needed_kv_gib": 4.0, "available_kv_gib": 2.5, "estimated_max_model_len": 20480}
    cut_number = STARTUP.replace("(9.8/11.6 GiB)", "(9.8/11.\n6 GiB)")
    assert diagnose(cut_number).primary.numbers["total_gib"] == 11.6


def test_crlf_and_lone_cr_count_lines_like_universal_newlines():
    text = "INFO a\r\nINFO b\rprogress 50%\r\n" + STARTUP + "\r\n"
    d = diagnose(text)
    assert d.primary.line == 4
    assert d.primary.evidence == [STARTUP]


@pytest.mark.parametrize("name, kind, fix, rule", [
    ("failing_startup_kv_v1.log", "max_model_len_exceeds_kv_cache", {"max_model_len": 23552},
     "vllm.kv_cache_max_model_len"),
    ("failing_capture_oom_v1.log", "cuda_graph_oom", {"enforce_eager": True}, "torch.cuda_oom"),
    ("failing_sampler_oom_v1.log", "cuda_oom_allocation", {"max_num_seqs": 128}, "vllm.warmup_oom"),
    ("failing_no_kv_v0.log", "no_kv_cache_memory", {"gpu_memory_utilization": 1.0}, "vllm.no_kv_cache_memory"),
    ("failing_weights_oom_v0.log", "cuda_oom_allocation", {}, "torch.cuda_oom"),
])
def test_whole_failing_log(name, kind, fix, rule):
    text = (SAMPLES / name).read_text()
    d = diagnose(text)
    assert d.primary is not None
    assert (d.primary.kind, d.primary.fix, d.primary.rule) == (kind, fix, rule)
    assert d.primary.evidence[0] in text.splitlines()
    assert text.splitlines()[d.primary.line - 1] == d.primary.evidence[0]
    assert all(f.kind == kind or f.rule == "torch.cuda_oom" for f in d.findings)


def test_weights_oom_without_the_wrapper_is_an_alert():
    d = diagnose((SAMPLES / "failing_weights_oom_v0.log").read_text(), current=ServingConfig())
    assert d.primary.action == "alert" and d.primary.fix_direction == {}
    assert "weights" in d.primary.note
    assert d.primary.numbers == {"tried_to_allocate_mib": 464.0, "gpu_total_gib": 79.15, "gpu_free_mib": 301.69}


def test_no_kv_v0_log_takes_its_numbers_from_the_profiling_lines():
    d = diagnose((SAMPLES / "failing_no_kv_v0.log").read_text())
    # 0.80 + 2.33 * 1.1 / 15.57 = 0.9646 -> 1.00: above the 0.90 bound, left visible for escalation
    # ... and the block count that vLLM printed before it raised (an inferred finding of the same failure)
    assert d.primary.numbers == {"available_kv_gib": -2.33, "total_gib": 15.57, "requested_utilization": 0.8,
                                 "num_blocks": 0}
    # the traceback's source line `raise ValueError("No available memory ...` is not a second finding
    # (the message follows it); what the accounting lines implied before it is, inferred
    assert [f.rule for f in d.findings if f.confidence == "stated"] == ["vllm.no_kv_cache_memory"]
    assert d.primary.rule == "vllm.no_kv_cache_memory" and d.primary.confidence == "stated"
    assert len(d.primary.evidence) == 3


def test_sampler_wrapper_wins_over_the_torch_oom_it_wraps():
    d = diagnose((SAMPLES / "failing_sampler_oom_v1.log").read_text())
    assert [f.rule for f in d.findings] == ["torch.cuda_oom", "vllm.warmup_oom"]
    assert d.findings[0].kind == "cuda_oom_allocation"  # capture had finished: not a graph OOM
    # the wrapper states the request count; the OOM it wraps, the allocation (engine._with_cause)
    assert d.primary.numbers == {"max_num_seqs": 256, **d.findings[0].numbers}
    assert d.findings[0].numbers.keys() == {"tried_to_allocate_mib", "gpu_total_gib", "gpu_free_mib"}


def test_capture_oom_cites_the_capture_context():
    d = diagnose((SAMPLES / "failing_capture_oom_v1.log").read_text())
    assert d.primary.numbers == {"tried_to_allocate_mib": 128.0, "gpu_total_gib": 23.54, "gpu_free_mib": 90.19}
    assert "CUDA-graph capture" in d.primary.note
    assert any("capture_end" in e or "capture_model" in e or "Capturing" in e for e in d.primary.evidence[1:])


def test_oom_after_capture_finished_is_a_plain_oom():
    text = ("Capturing CUDA graphs (decode, FULL): 100%|##| 7/7\n"
            "INFO 11-24 06:55:50 [gpu_model_runner.py:3118] Graph capturing finished in 2 secs, took 0.29 GiB\n"
            + OOM)
    assert diagnose(text, current=CURRENT).primary.kind == "cuda_oom_allocation"


def test_a_failure_ends_the_capture_phase():
    text = ("Capturing CUDA graphs (decode, FULL):  40%|##| 3/7\n" + OOM + "\n"
            "INFO 11-24 06:56:00 [x.py:1] something else\n" + OOM)
    assert [f.kind for f in diagnose(text, current=CURRENT).findings] == ["cuda_graph_oom", "cuda_oom_allocation"]


def test_weights_oom_is_an_alert_even_through_the_reraised_torch_oom():
    text = ("INFO 11-24 06:55:09 [gpu_model_runner.py:2338] Starting to load model big/model...\n"
            "ERROR 11-24 06:55:12 [gpu_model_runner.py:2500] Failed to load model - not enough GPU memory. Try "
            "lowering --gpu-memory-utilization to free memory for weights, increasing --tensor-parallel-size, or "
            "using --quantization. See https://docs.vllm.ai/en/latest/configuration/conserving_memory/ for more "
            "tips. (original error: CUDA out of memory. Tried to allocate 500.00 MiB. GPU 0 has a total capacity "
            "of 11.60 GiB of which 120.50 MiB is free.)\n"
            'Traceback (most recent call last):\n'
            '  File "/opt/vllm/vllm/v1/worker/gpu_model_runner.py", line 2480, in load_model\n'
            '    self.model = model_loader.load_model(\n'
            "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 500.00 MiB. GPU 0 has a total capacity "
            "of 11.60 GiB of which 120.50 MiB is free.\n")
    d = diagnose(text, current=CURRENT)
    assert d.primary.rule == "vllm.weights_oom" and d.primary.action == "alert"
    assert d.findings[-1].kind == "cuda_oom_allocation" and d.findings[-1].action == "alert"
    assert "weights" in d.findings[-1].note


def test_primary_comes_from_the_last_start_attempt():
    text = ("INFO 11-24 06:50:00 [core.py:76] Initializing a V1 LLM engine (v0.10.2) with config: x\n"
            "RuntimeError: CUDA out of memory occurred when warming up sampler with 256 dummy requests.\n"
            "INFO 11-24 06:55:00 [core.py:76] Initializing a V1 LLM engine (v0.10.2) with config: x\n"
            + STARTUP + "\n")
    d = diagnose(text)
    assert len(d.findings) == 2
    assert d.primary.kind == "startup_free_memory_below_utilization"


def test_a_start_that_reached_serving_clears_the_primary():
    healthy = (SAMPLES / "healthy_startup_v1.log").read_text()
    d = diagnose(STARTUP + "\n" + healthy)
    assert len(d.findings) == 1 and d.primary is None
    # a failure after the server came up is the state again
    d = diagnose(STARTUP + "\n" + healthy + OOM, current=CURRENT)
    assert d.primary.kind == "cuda_oom_allocation"


def test_context_does_not_leak_across_restarts():
    text = ("INFO 11-24 06:50:00 [gpu_worker.py:298] Available KV cache memory: -3.00 GiB\n"
            "INFO 11-24 06:55:00 [core.py:76] Initializing a V1 LLM engine (v0.10.2) with config: x\n"
            + NO_KV)
    assert diagnose(text, current=CURRENT).primary.numbers == {}


def test_format_diagnosis_is_readable():
    d = diagnose((SAMPLES / "failing_sampler_oom_v1.log").read_text())
    out = format_diagnosis(d)
    assert out.startswith("Failure: cuda_oom_allocation (rule vllm.warmup_oom v1, line 18) -> tune")
    assert "decrease max_num_seqs -> 128" in out
    assert "decrease gpu_memory_utilization (alternative)" in out
    assert "numbers: max_num_seqs=256" in out
    assert "Also seen (1):" in out
    assert "sampler with 256 dummy requests" in out
