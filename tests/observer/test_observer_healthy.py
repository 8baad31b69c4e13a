"""Silence: healthy lines (error_formats.md section 8 and the look-alikes elsewhere) give no finding."""
from __future__ import annotations

from pathlib import Path

import pytest

from selfheal.handlers.observer import diagnose, format_diagnosis
from selfheal.schemas.serving import ServingConfig

SAMPLES = Path(__file__).parent / "samples"

HEALTHY = [
    # section 8
    "INFO 01-24 10:02:17 llm_engine.py:275] # GPU blocks: 1825, # CPU blocks: 2048",
    "INFO 12-03 10:02:17 executor_base.py:110] # cuda blocks: 2339, # CPU blocks: 2048",
    "INFO 02-11 10:02:17 kv_cache_utils.py:578] # GPU blocks: 27128",
    "INFO 11-24 06:55:48 [kv_cache_utils.py:1091] Maximum concurrency for 8192 tokens per request: 5.30x",
    "INFO 11-24 06:55:48 [kv_cache_utils.py:1087] GPU KV cache size: 43,392 tokens",
    "INFO 11-24 06:55:48 [kv_cache_planning.py:210] GPU KV cache size: 43,392 tokens, Maximum concurrency for "
    "8,192 tokens per request: 5.30x",
    "INFO 11-24 06:55:48 [gpu_worker.py:298] Available KV cache memory: 5.3 GiB",
    "INFO 11-24 06:55:48 [gpu_worker.py:298] Available KV cache memory: 5.30 GiB",
    "INFO 12-01 10:00:00 worker.py:232] Memory profiling results: total_gpu_memory=79.15GiB "
    "initial_memory_usage=15.71GiB peak_torch_memory=16.96GiB memory_usage_post_profile=15.87GiB "
    "non_torch_memory=0.85GiB kv_cache_size=53.43GiB gpu_memory_utilization=0.90",
    "INFO 01-02 03:04:09 worker.py:241] Memory profiling takes 2.61 seconds\n"
    "INFO 01-02 03:04:09 worker.py:241] the current vLLM instance can use total_gpu_memory (23.54GiB) x "
    "gpu_memory_utilization (0.90) = 21.19GiB\n"
    "INFO 01-02 03:04:09 worker.py:241] model weights take 14.99GiB; non_torch_memory takes 0.09GiB; PyTorch "
    "activation peak memory takes 1.19GiB; the rest of the memory reserved for KV Cache is 4.92GiB.",
    "INFO 11-24 06:55:47 [gpu_worker.py:276] Memory profiling takes 5.18 seconds. Total non KV cache memory: "
    "16.12GiB; torch peak memory increase: 1.02GiB; non-torch forward increase memory: 0.09GiB; weights memory: "
    "15.01GiB.",
    "INFO 05-01 10:00:00 model_runner.py:160] Loading model weights took 14.9888 GB",
    "INFO 03-01 10:00:00 [gpu_model_runner.py:1100] Model loading took 14.9888 GB and 4.123456 seconds",
    "INFO 04-20 10:00:00 [gpu_model_runner.py:1329] Model loading took 14.9888 GiB and 4.123456 seconds",
    "INFO 11-24 06:55:14 [gpu_model_runner.py:2392] Model loading took 14.9888 GiB memory and 4.117306 seconds",
    "INFO 11-24 06:55:14 [gpu_model_runner.py:2392] Model loading took 14.99 GiB memory and 4.117306 seconds",
    "INFO 05-01 10:00:00 metrics.py:455] Avg prompt throughput: 0.0 tokens/s, Avg generation throughput: 12.3 "
    "tokens/s, Running: 1 reqs, Swapped: 0 reqs, Pending: 0 reqs, GPU KV cache usage: 0.4%, CPU KV cache usage: "
    "0.0%.",
    # look-alikes named elsewhere in error_formats.md
    "INFO 11-24 06:55:50 [gpu_worker.py:391] Free memory on device (22.8/23.54 GiB) on startup. Desired GPU "
    "memory utilization is (0.85, 20.01 GiB). Actual usage is 14.25 GiB for weight, 1.06 GiB for peak activation, "
    "0.09 GiB for non-torch memory, and 0.29 GiB for CUDAGraph memory. Replace gpu_memory_utilization config with "
    "`--kv-cache-memory=4629371084` to fit into requested memory, or `--kv-cache-memory=7661208371` to fully "
    "utilize gpu memory. Current kv cache memory in use is 4949872844 bytes.",
    "INFO 11-24 06:55:47 [gpu_worker.py:310] CUDA graph memory profiling is enabled (default since v0.21.0). The "
    "current --gpu-memory-utilization=0.9000 is equivalent to --gpu-memory-utilization=0.8812 without CUDA graph "
    "memory profiling. To maintain the same effective KV cache size as before, increase --gpu-memory-utilization "
    "to 0.9188. To disable, set VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=0.",
    "WARNING 11-24 06:55:47 [gpu_worker.py:318] CUDA graph memory profiling is disabled "
    "(VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=0). CUDA graph memory is not reserved and may require lowering "
    "--gpu-memory-utilization to avoid OOM during capture.",
    "INFO 11-24 06:55:46 [gpu_model_runner.py:4012] Profiling CUDA graph memory: 51 sizes",
    "INFO 11-24 06:55:47 [gpu_model_runner.py:4050] Estimated CUDA graph memory: 0.52 GiB total",
    "INFO 11-24 06:55:51 [gpu_model_runner.py:4120] CUDA graph pool memory: 0.5 GiB (actual), 0.52 GiB "
    "(estimated), difference: -0.02 GiB (-3.8%).",
    "INFO 10-01 12:00:00 model_runner.py:1072] Capturing cudagraphs for decoding. This may lead to unexpected "
    "consequences if the model is not static. To run the model in eager mode, set 'enforce_eager=True' or use "
    "'--enforce-eager' in the CLI. If out-of-memory error occurs during cudagraph capture, consider decreasing "
    "`gpu_memory_utilization` or switching to eager mode. You can also reduce the `max_num_seqs` as needed to "
    "decrease memory usage.",
    "INFO 01-24 10:02:20 model_runner.py:635] Capturing the model for CUDA graphs. This may lead to unexpected "
    "consequences if the model is not static. To run the model in eager mode, set 'enforce_eager=True' or use "
    "'--enforce-eager' in the CLI.\n"
    "INFO 01-24 10:02:20 model_runner.py:639] CUDA graphs can take additional 1~3 GiB memory per GPU. If you are "
    "running out of memory, consider decreasing `gpu_memory_utilization` or enforcing eager mode. You can also "
    "reduce the `max_num_seqs` as needed to decrease memory usage.",
    "Capturing CUDA graphs (mixed prefill-decode, PIECEWISE): 100%|██████████| 67/67 [00:05<00:00, 12.80it/s]",
    "INFO 11-24 06:55:50 [gpu_model_runner.py:3118] Graph capturing finished in 2 secs, took 0.45 GiB",
    "INFO 05-01 10:00:00 model_runner.py:1200] Graph capturing finished in 12 secs",
    "INFO 11-24 06:55:12 [utils.py:140] Weights are held outside this process: of the 10.44 GiB utilization "
    "budget, 7.5 GiB is externally held and 2.94 GiB remains for the engine's own allocations.",
    "WARNING 11-24 06:55:05 [scheduler.py:230] max_num_batched_tokens (65536) exceeds max_num_seqs * "
    "max_model_len (32768). This may lead to unexpected behavior.",
    # a prompt the KV cache could never hold: the request is dropped, the server keeps serving; no
    # config failure. (One refusal over the prompt limit is told, unsustained, and never tuned:
    # test_log_inference.TOLD_ALONE; a limit of 2560 is vLLM 0.1's token budget, a config failure.)
    "WARNING 05-01 10:00:00 scheduler.py:1089] Input prompt (9000 tokens) is too long and exceeds the capacity "
    "of block_manager",
    # VLLM_ALLOW_LONG_MAX_MODEL_LEN set: the length check's sentence as a warning, and the server starts
    "WARNING 12-06 07:00:00 [model.py:1700] User-specified max_model_len (1048576) is greater than the derived "
    "max_model_len (max_position_embeddings=2048.0 or model_max_length=None in model's config.json). "
    "VLLM_ALLOW_LONG_MAX_MODEL_LEN must be used with extreme caution. If the model uses relative position encoding "
    "(RoPE), positions exceeding derived_max_model_len lead to nan.",
    "WARNING 05-01 07:00:00 config.py:1700] User-specified max_model_len (8192) is greater than the derived "
    "max_model_len (max_position_embeddings=4096 or model_max_length=None in model's config.json). Make sure the "
    "value is correct and within the model context size.",
    # above 40% of the host's memory vLLM only warns (above 70% it refuses: test_log_inference.py)
    "WARNING 03-04 05:06:07 config.py:600] Possibly too large swap space. 16.00 GiB out of the 31.27 GiB total CPU "
    "memory is allocated for the swap space.",
    # the word "error" and "out of memory" in ordinary text
    "INFO 11-24 06:55:08 [core.py:76] Initializing a V1 LLM engine (v0.10.2) with config: enforce_eager=False",
    "(APIServer pid=99) INFO:     127.0.0.1:51234 - \"POST /v1/chat/completions HTTP/1.1\" 400 Bad Request",
]


@pytest.mark.parametrize("text", HEALTHY, ids=range(len(HEALTHY)))
@pytest.mark.parametrize("prefix", ["", "(EngineCore_DP0 pid=5123) ", "2025-01-02T03:04:05.123456Z "])
def test_healthy_line_is_silent(text, prefix):
    text = "\n".join(prefix + line for line in text.split("\n"))
    d = diagnose(text, current=ServingConfig())
    assert d.findings == []
    assert d.primary is None


def test_all_healthy_lines_together_are_silent():
    assert diagnose("\n".join(HEALTHY)).findings == []


def test_full_healthy_startup_log_is_silent():
    text = (SAMPLES / "healthy_startup_v1.log").read_text()
    assert len(text.splitlines()) >= 30
    d = diagnose(text, current=ServingConfig(gpu_memory_utilization=0.85))
    assert d.findings == [] and d.primary is None
    assert format_diagnosis(d) == "No configuration failure found."


def test_empty_and_blank_text():
    for text in ("", "\n", "\r\n\r\n", "   \t  "):
        assert diagnose(text) == diagnose("")
        assert diagnose(text).primary is None


def test_a_start_that_ends_with_its_capture_bar_at_100_percent_is_not_cut_short():
    start = ("(EngineCore_DP0 pid=5) INFO 07-14 08:40:27 [gpu_model_runner.py:3480] Model loading took 15.2 GiB\n"
             "(EngineCore_DP0 pid=5) INFO 07-14 08:40:29 [kv_cache_utils.py:1087] GPU KV cache size: 180,224 tokens\n")
    done = "Capturing CUDA graph shapes: 100%|██████████| 35/35 [00:08<00:00,  4.18it/s]"
    assert diagnose(start + done).findings == []
    # the same bar part way is a start cut inside capture
    cut = diagnose(start + "Capturing CUDA graph shapes:  40%|████      | 14/35 [00:03<00:05,  4.18it/s]")
    assert cut.primary.kind == "cuda_graph_oom" and cut.primary.confidence == "truncated"


def test_a_segfault_whose_stack_passes_through_capture_is_no_capture_oom():
    # Python's fault handler lists a fatal signal's stack as 'line N in f' (no comma): the process
    # died of SIGSEGV inside capture, which no memory setting explains
    w = "(RayWorkerWrapper pid=7, ip=10.0.0.2) "
    log = "\n".join([
        w + "*** SIGSEGV received at time=1746566409 on cpu 131 ***",
        w + "Fatal Python error: Segmentation fault",
        w + 'Thread 0x00007f5b (most recent call first):',
        w + '  File "/x/vllm/v1/worker/gpu_model_runner.py", line 1441 in _dummy_run',
        w + '  File "/x/vllm/v1/worker/gpu_model_runner.py", line 1618 in capture_model',
        w + '  File "/x/vllm/v1/worker/gpu_worker.py", line 216 in compile_or_warm_up_model',
        "(raylet) A worker died or was killed while executing a task by an unexpected system error.",
        "ERROR 05-06 14:20:10 [core.py:400] RuntimeError: Engine core initialization failed. See root cause above.",
    ])
    assert diagnose(log).findings == []
