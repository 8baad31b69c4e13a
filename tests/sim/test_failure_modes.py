"""Each failure mode F0–F8 is produced by some config and prints vLLM's exact wording.

The expected strings are written out by hand from vllm/error_formats.md (the 0.22.0–0.32.x
column), not built with logtext's own functions, so a change of wording fails here.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from selfheal.edges.sim import load_scenario, parse_scenario, simulate

DOCS = "https://docs.vllm.ai/en/latest/configuration/conserving_memory/"
# PyTorch >= 2.2 allocator message (error_formats.md §5), sizes from format_size
SIZE = r"(?:\d+ bytes|\d+\.\d\d (?:KiB|MiB|GiB))"
TORCH_OOM = re.compile(
    rf"CUDA out of memory\. Tried to allocate (?P<tried>{SIZE})\. GPU (?P<gpu>\d+) has a total capacity of "
    rf"(?P<total>{SIZE}) of which (?P<free>{SIZE}) is free\. (?P<procs>(?:Process \d+ has {SIZE} memory in use\. |"
    rf"Including non-PyTorch memory, this process has {SIZE} memory in use\. )+)Of the allocated memory "
    rf"{SIZE} is allocated by PyTorch, (?P<pools>with {SIZE} allocated in private pools \(e\.g\., CUDA Graphs\), )?"
    rf"and {SIZE} is reserved by PyTorch but unallocated\. If reserved but unallocated memory is large try setting "
    r"PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation\.  See documentation for Memory "
    r"Management  \(https://pytorch\.org/docs/stable/notes/cuda\.html#environment-variables\)$")


def run(name, **changes):
    s = load_scenario(name)
    return simulate(s, s.current.changed(**changes))


def message(result, prefix):
    """The text after `prefix` on the first excerpt line that has it."""
    for line in result.excerpt.splitlines():
        if prefix in line:
            return line.split(prefix, 1)[1]
    raise AssertionError(f"{prefix!r} not in excerpt:\n{result.excerpt}")


def test_f1_free_memory_below_utilization():
    r = run("c-mistral7b-shared-24gb")
    assert (r.failure_mode, r.failure_kind, r.failure_stage) == ("F1", "startup_free_memory_below_utilization",
                                                                 "startup")
    assert message(r, "ValueError: ") == (
        "Free memory on device cuda:0 (19.08/23.53 GiB) on startup is less than desired GPU memory utilization "
        "(0.9, 21.18 GiB). Decrease GPU memory utilization or reduce GPU memory used by other processes.")


def test_f1_on_the_workstation():
    r = run("workstation-12gb-speech")
    assert message(r, "ValueError: ").startswith(
        "Free memory on device cuda:0 (8.41/11.66 GiB) on startup is less than desired GPU memory utilization "
        "(0.9, 10.49 GiB).")


def test_f2_weights_do_not_fit():
    r = run("no-safe-fix")
    assert (r.failure_mode, r.failure_kind) == ("F2", "cuda_oom_allocation")
    wrapper = message(r, "[gpu_model_runner.py:5212] ")
    assert wrapper.startswith(
        "Failed to load model - not enough GPU memory. Try lowering --gpu-memory-utilization to free memory for "
        "weights, increasing --tensor-parallel-size, or using --quantization. See " + DOCS + " for more tips. "
        "(original error: CUDA out of memory. Tried to allocate ")
    oom = message(r, "torch.OutOfMemoryError: ")
    m = TORCH_OOM.match(oom)
    assert m and m["total"] == "11.66 GiB" and not m["pools"]
    assert wrapper == wrapper[: wrapper.index("(original error: ")] + f"(original error: {oom})"


def test_f3_sampler_warmup_oom():
    r = run("b-qwen7b-16gb", gpu_memory_utilization=0.95, max_num_seqs=2048, max_num_batched_tokens=2048)
    assert (r.failure_mode, r.failure_kind) == ("F3", "cuda_oom_allocation")
    assert message(r, "RuntimeError: ") == (
        "CUDA out of memory occurred when warming up sampler with 2048 dummy requests. Please try lowering "
        "`max_num_seqs` or `gpu_memory_utilization` when initializing the engine.")
    m = TORCH_OOM.match(message(r, "torch.OutOfMemoryError: "))
    assert m and m["tried"] == "1.16 GiB"            # 2048 x 152064 fp32 logits
    assert "The above exception was the direct cause of the following exception:" in r.log_text


def test_f3_profile_forward_oom_has_no_sampler_wrapper():
    r = run("b-qwen7b-16gb", gpu_memory_utilization=0.95, max_num_seqs=1024, max_num_batched_tokens=8192)
    assert r.failure_mode == "F3"
    assert TORCH_OOM.match(message(r, "torch.OutOfMemoryError: "))["tried"] == "592.00 MiB"   # gate_up output
    assert "warming up sampler" not in r.log_text


def test_f4_no_kv_cache_memory():
    r = run("b-qwen7b-16gb")
    assert (r.failure_mode, r.failure_kind) == ("F4", "no_kv_cache_memory")
    assert message(r, "ValueError: ") == (
        "No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when initializing the "
        "engine (this flag also controls CPU memory reservation on the CPU backend, despite its name). See "
        + DOCS + " for more details.")
    assert message(r, "Available KV cache memory: ") == "-1.17 GiB"
    assert r.available_kv_gib < 0


def test_f5_max_model_len_exceeds_kv_cache():
    r = run("a-llama8b-24gb")
    assert (r.failure_mode, r.failure_kind) == ("F5", "max_model_len_exceeds_kv_cache")
    assert message(r, "ValueError: ") == (
        "To serve at least one request with the model's max seq len (131072), (16.0 GiB KV cache is needed, which "
        "is larger than the available KV cache memory (5.3 GiB). Based on the available memory, the estimated "
        "maximum model length is 43408. Try increasing `gpu_memory_utilization` (which also controls CPU memory on "
        "the CPU backend) or decreasing `max_model_len` when initializing the engine. See " + DOCS +
        " for more details.")
    assert r.estimated_max_model_len == 43408
    assert message(r, "Available KV cache memory: ") == "5.3 GiB"


def test_f6_cuda_graph_capture_oom():
    r = run("workstation-12gb-speech", gpu_memory_utilization=0.72)
    assert (r.failure_mode, r.failure_kind, r.failure_stage) == ("F6", "cuda_graph_oom", "startup")
    m = TORCH_OOM.match(message(r, "torch.OutOfMemoryError: "))
    assert m and m["pools"]                                       # allocated in private pools (CUDA Graphs)
    assert m["procs"].startswith("Process 2211 has 1.70 GiB memory in use. Process 2290 has 1.10 GiB memory in use. "
                                 "Including non-PyTorch memory, this process has ")
    assert "in _capture_cudagraphs" in r.log_text
    assert "GPU KV cache size: 19,872 tokens" in r.log_text      # the KV cache was already allocated
    # the known workaround (§1.10): eager mode captures nothing
    assert run("workstation-12gb-speech", gpu_memory_utilization=0.72, enforce_eager=True).started


def test_f7_preemption_storm():
    r = run("a-llama8b-24gb", gpu_memory_utilization=0.75, max_model_len=8192, max_num_seqs=16)
    assert r.started and not r.passed_load
    assert (r.failure_mode, r.failure_kind, r.failure_stage) == ("F7", "preemption_storm", "load")
    assert r.preemptions > 0.1 * 64
    line = re.compile(r"Engine 000: Avg prompt throughput: \d+\.\d tokens/s, Avg generation throughput: \d+\.\d "
                      r"tokens/s, Running: \d+ reqs, Waiting: \d+ reqs, GPU KV cache usage: \d+\.\d%, "
                      r"Prefix cache hit rate: 0\.0%$")
    assert r.excerpt and all(line.search(x) for x in r.excerpt.splitlines())
    assert f"vllm:num_preemptions_total{{engine=\"0\",model_name=\"meta-llama/Llama-3.1-8B-Instruct\"}} " \
           f"{float(r.preemptions)}" in r.metrics_text


def test_f8_cotenant_grows_past_the_slack():
    r = run("c-mistral7b-shared-24gb", gpu_memory_utilization=0.81)
    assert r.started and not r.passed_load
    assert (r.failure_mode, r.failure_kind, r.failure_stage) == ("F8", "cotenant_oom", "load")
    assert r.excerpt.startswith("(whisper-tts pid=3150) torch.OutOfMemoryError: ")
    m = TORCH_OOM.match(message(r, "torch.OutOfMemoryError: "))
    assert m["tried"] == "409.60 MiB"                                 # the 0.4 GiB burst
    assert "Process 4242 has" in m["procs"]                            # vLLM holds the rest


@pytest.mark.parametrize("changes, model, text", [
    ({"max_model_len": 262144}, "ModelConfig",
     "  Value error, User-specified max_model_len (262144) is greater than the derived max_model_len "
     "(max_position_embeddings=131072.0 or model_max_length=None in model's config.json). To allow overriding this "
     "maximum, set the env var VLLM_ALLOW_LONG_MAX_MODEL_LEN=1. VLLM_ALLOW_LONG_MAX_MODEL_LEN must be used with "
     "extreme caution. If the model uses relative position encoding (RoPE), positions exceeding "
     "derived_max_model_len lead to nan. If the model uses absolute position encoding, positions exceeding "
     "derived_max_model_len will cause a CUDA array out-of-bounds error. [type=value_error, "),
    ({"max_num_batched_tokens": 128}, "SchedulerConfig",
     "  Value error, max_num_batched_tokens (128) must be greater than or equal to max_num_seqs (256). "
     "[type=value_error, "),
    ({"gpu_memory_utilization": 1.2}, "CacheConfig",
     "  Input should be less than or equal to 1 [type=less_than_equal, input_value=1.2, input_type=float]"),
])
def test_f0_config_errors(changes, model, text):
    r = run("a-llama8b-24gb", **changes)
    assert (r.failure_mode, r.failure_kind, r.failure_stage) == ("F0", "other_config_error", "config")
    assert message(r, "(APIServer pid=4100) ") == f"pydantic_core._pydantic_core.ValidationError: 1 validation " \
                                                  f"error for {model}"
    assert any(line.split("(APIServer pid=4100) ", 1)[1].startswith(text) for line in r.excerpt.splitlines())
    assert "EngineCore" not in r.log_text                              # no GPU work at all
    assert r.peak_memory_gib == 0.0


def test_f0_batched_tokens_below_model_len_without_chunked_prefill():
    text = Path(load_scenario("a-llama8b-24gb").source).read_text()
    s = parse_scenario(text + "\n[engine]\nchunked_prefill = false\n", source="no-chunked.toml")
    r = simulate(s, s.current.changed(max_model_len=32768))
    assert (r.failure_mode, r.failure_kind) == ("F0", "batched_tokens_below_model_len")
    assert ("  Value error, max_num_batched_tokens (2048) is smaller than max_model_len (32768). This effectively "
            "limits the maximum sequence length to max_num_batched_tokens and makes vLLM reject longer sequences. "
            "Please increase max_num_batched_tokens or decrease max_model_len. [type=value_error, ") in r.excerpt
    # with chunked prefill (the V1 default) the same config is fine
    assert run("a-llama8b-24gb", max_model_len=32768).started


FAILURES = [
    ("a-llama8b-24gb", {"max_num_batched_tokens": 128}),
    ("c-mistral7b-shared-24gb", {}),
    ("no-safe-fix", {}),
    ("b-qwen7b-16gb", {"gpu_memory_utilization": 0.95, "max_num_seqs": 2048, "max_num_batched_tokens": 2048}),
    ("b-qwen7b-16gb", {}),
    ("a-llama8b-24gb", {}),
    ("workstation-12gb-speech", {"gpu_memory_utilization": 0.72}),
    ("a-llama8b-24gb", {"gpu_memory_utilization": 0.75, "max_model_len": 8192, "max_num_seqs": 16}),
    ("c-mistral7b-shared-24gb", {"gpu_memory_utilization": 0.81}),
]


@pytest.mark.parametrize("name, changes", FAILURES)
def test_every_excerpt_line_is_a_line_of_the_log(name, changes):
    r = run(name, **changes)
    lines = set(r.log_text.splitlines())
    assert r.excerpt and all(x in lines for x in r.excerpt.splitlines())


def test_all_modes_are_covered():
    assert sorted(run(n, **c).failure_mode for n, c in FAILURES) == [f"F{i}" for i in range(9)]
