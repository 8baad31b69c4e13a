"""Issue 14's mechanisms, one by one, on the shapes real pastes take (tests/observer/samples/wild
holds the real excerpts; bench/wild.py scores them): collector prefixes learnt per log,
findings inferred from vLLM's accounting lines or from a traceback's raise site, a log cut
inside CUDA-graph capture, runtime symptoms that must be sustained, and the confidence each
finding states."""
from __future__ import annotations

import pytest

from selfheal.handlers.observer import builtin_ruleset, diagnose
from selfheal.handlers.observer.prefixes import learn, without_collectors
from selfheal.schemas.serving import ServingConfig

H = "INFO 04-27 10:13:05 llm_engine.py:275] "
V1 = "(EngineCore_DP0 pid=563) INFO 12-23 23:34:23 [gpu_worker.py:298] "
CONFIG = H + "Initializing an LLM engine with config: model='m', max_seq_len=4096, block_size=16, seed=0"
STATS = ("(APIServer pid=1) INFO 05-19 10:13:{s:02d} [loggers.py:271] Engine 000: Avg prompt throughput: 0.0 tokens/s, "
         "Avg generation throughput: 1055.3 tokens/s, Running: 18 reqs, Waiting: {w} reqs, GPU KV cache usage: {kv}%, "
         "Prefix cache hit rate: 0.0%")
PREEMPT = ("WARNING 04-14 20:04:53 scheduler.py:1484] Sequence group {g} is preempted by PreemptionMode.RECOMPUTE mode "
           "because there is not enough KV cache space. This can affect the end-to-end performance. Increase "
           "gpu_memory_utilization or tensor_parallel_size to provide more KV cache memory.{tail}")
CAPTURE = [V1 + "Model loading took 15.59 GiB and 12.3 seconds",
           V1 + "Available KV cache memory: 20.1 GiB",
           V1 + "Capturing CUDA graph shapes:  40%|####      | 27/67"]
OOM = ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 23.54 "
       "GiB of which 1.20 GiB is free.")
REJECT = ("ERROR 02-13 07:19:1{s} serving_chat.py:200] Error in preprocessing prompt inputs: This model's maximum "
          "context length is 4096 tokens. However, you requested 5{s}00 tokens (5000 in the messages). Please reduce")

W = "(EngineCore pid=79) "
FRAME = W + '  File "/usr/lib/python3.12/site-packages/vllm/{path}", line {n}, in {fn}'
KV_CHECK = [W + "INFO 06-09 14:01:50 [gpu_worker.py:298] Available KV cache memory: {kv} GiB",
            W + "Traceback (most recent call last):",
            FRAME.format(path="v1/core/kv_cache_utils.py", n=700, fn="_check_enough_kv_cache_memory"),
            W + "    raise ValueError("]

# (name, log, rule, kind, confidence, numbers it must state, a direction it must have)
CASES = [
    ("CPU KV request above the node's free memory",
     "ValueError: Available memory on node 0 (3.2/31.2 GiB) on kv cache allocation is less than requested memory "
     "for kv (24.6/28.08 GiB). Reduce CPU memory used by other processes.",
     "vllm.cpu_kv_allocation_over_free", "no_kv_cache_memory", "stated", {"requested_kv_gib": 24.6},
     ("gpu_memory_utilization", "decrease")),
    ("V0 '# GPU blocks: 0'", H + "# GPU blocks: 0, # CPU blocks: 256",
     "vllm.acct.no_gpu_blocks", "no_kv_cache_memory", "inferred", {"num_blocks": 0}, ("gpu_memory_utilization", "increase")),
    ("V0 0.1 '# GPU blocks: -1'", H + "# GPU blocks: -1, # CPU blocks: 512",
     "vllm.acct.no_gpu_blocks", "no_kv_cache_memory", "inferred", {"num_blocks": -1}, ("gpu_memory_utilization", "increase")),
    ("V0 blocks x 16 below max_seq_len", CONFIG + "\n" + H + "# GPU blocks: 229, # CPU blocks: 512",
     "vllm.acct.blocks_below_max_model_len", "max_model_len_exceeds_kv_cache", "inferred",
     {"num_blocks": 229}, ("max_model_len", "decrease")),
    ("V1 negative KV budget", V1 + "Available KV cache memory: -2.77 GiB",
     "vllm.acct.negative_kv", "no_kv_cache_memory", "inferred", {"available_kv_gib": -2.77},
     ("gpu_memory_utilization", "increase")),
    ("V0 negative KV rest", H + "model weights take 5.20GiB; non_torch_memory takes 0.03GiB; PyTorch activation peak "
     "memory takes 1.42GiB; the rest of the memory reserved for KV Cache is -1.05GiB.",
     "vllm.acct.negative_kv_v0", "no_kv_cache_memory", "inferred", {"available_kv_gib": -1.05},
     ("gpu_memory_utilization", "increase")),
    ("concurrency below one", H + "Maximum concurrency for 29000 tokens per request: 0.82x",
     "vllm.acct.concurrency_below_one", "max_model_len_exceeds_kv_cache", "inferred",
     {"max_model_len": 29000, "max_concurrency": 0.82}, ("max_model_len", "decrease")),
    ("concurrency zero", H + "Maximum concurrency for 4096 tokens per request: 0.00x",
     "vllm.acct.concurrency_zero", "no_kv_cache_memory", "inferred", {"max_model_len": 4096},
     ("gpu_memory_utilization", "increase")),
    ("V1 KV tokens below max_seq_len", CONFIG + "\n" + V1 + "GPU KV cache size: 3,648 tokens",
     "vllm.acct.kv_tokens_below_max_model_len", "max_model_len_exceeds_kv_cache", "inferred",
     {"kv_cache_tokens": 3648}, ("max_model_len", "decrease")),
    ("V1 KV tokens below the length the model config settled on",
     "(APIServer pid=7) INFO 04-15 09:33:52 [model.py:1685] Using max model len 262144\n" + V1
     + "GPU KV cache size: 37,392 tokens", "vllm.acct.kv_tokens_below_max_model_len", "max_model_len_exceeds_kv_cache",
     "inferred", {"kv_cache_tokens": 37392, "max_model_len": 262144}, ("max_model_len", "decrease")),
    ("abridged torch OOM, cut after its size", "torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate "
     "9.25 GiB. GPU", "torch.cuda_oom", "cuda_oom_allocation", "stated", {"tried_to_allocate_mib": 9472.0},
     ("gpu_memory_utilization", "decrease")),
    ("driver OOM retyped in another case", "Cuda Error: out of memory at /workspace/csrc/cumem_allocator.cpp: 62",
     "torch.cuda_driver_oom", "cuda_oom_allocation", "stated", {}, ("gpu_memory_utilization", "decrease")),
    ("Triton's driver out of memory at a kernel's launch", V1 + "RuntimeError: Triton Error [CUDA]: out of memory",
     "torch.cuda_driver_oom", "cuda_oom_allocation", "stated", {}, ("gpu_memory_utilization", "decrease")),
    ("traceback cut at the raise of a one-failure function", "\n".join([
        W + "Traceback (most recent call last):", FRAME.format(path="v1/worker/utils.py", n=413, fn="request_memory"),
        W + "    raise ValueError("]),
     "vllm.frame.request_memory", "startup_free_memory_below_utilization", "inferred", {},
     ("gpu_memory_utilization", "decrease")),
    ("python 3.13 elides the raise's arguments", "\n".join([
        FRAME.format(path="v1/worker/gpu_model_runner.py", n=3221, fn="_dummy_sampler_run"),
        W + "    raise RuntimeError(", W + "    ...<3 lines>...", W + '        "initializing the engine.") from e']),
     "vllm.frame.sampler_warmup", "cuda_oom_allocation", "inferred", {}, ("max_num_seqs", "decrease")),
    ("KV check raised with a budget left", "\n".join(KV_CHECK).format(kv=4.0),
     "vllm.frame.kv_check_max_len", "max_model_len_exceeds_kv_cache", "inferred", {"available_kv_gib": 4.0},
     ("max_model_len", "decrease")),
    ("KV check raised with no budget", "\n".join(KV_CHECK).format(kv=-0.5),
     "vllm.frame.kv_check_no_memory", "no_kv_cache_memory", "inferred", {"available_kv_gib": -0.5},
     ("gpu_memory_utilization", "increase")),
    ("V1 KV check message cut mid-word", W + "ValueError: To serve at least one request with the model's max seq len "
     "(100000), (4.26 GiB KV cach", "vllm.kv_cache_max_model_len", "max_model_len_exceeds_kv_cache", "stated",
     {"max_model_len": 100000, "needed_kv_gib": 4.26}, ("max_model_len", "decrease")),
    ("vLLM 0.2's derived-length wording", "ValueError: User-specified max_model_len (4096) is greater than the derived "
     "max_model_len (None=2048 in model's config.json). This may lead to incorrect model outputs or CUDA errors.",
     "vllm.max_model_len_above_derived", "other_config_error", "stated",
     {"max_model_len": 4096, "derived_max_model_len": 2048}, ("max_model_len", "decrease")),
    ("vllm-ascend's KV budget of 0 bytes", "(Worker_TP0 pid=552) INFO 10-28 21:14:49 [worker_v1.py:259] Available "
     "memory: 0, total memory: 65452113920", "vllm.acct.ascend_no_memory", "no_kv_cache_memory", "inferred",
     {"available_kv_gib": 0.0}, ("gpu_memory_utilization", "increase")),
    # the poster's words in Chinese on the next line, joined to it as a wrap would be: a number is
    # ended by a CJK character as by a blank (CJK letters are word characters to a Unicode \b)
    ("vllm-ascend's KV budget of 0 bytes, the poster's words below it", "(EngineCore_DP0 pid=634) INFO 11-22 "
     "10:01:28 [worker_v1.py:256] Available memory: 0, total memory: 65452113920\n\u7b2c\u4e8c\u4e2a\u6a21\u578b"
     "\u542f\u52a8\u65f6\u62a5\u9519\u663e\u5b58\u4e3a0", "vllm.acct.ascend_no_memory", "no_kv_cache_memory",
     "inferred", {"available_kv_gib": 0.0, "total_gib": 60.95703125}, ("gpu_memory_utilization", "increase")),
    ("cut inside CUDA-graph capture", "\n".join(CAPTURE),
     "vllm.cut.cudagraph_capture", "cuda_graph_oom", "truncated", {"available_kv_gib": 20.1}, ("enforce_eager", "enable")),
    ("V0 KV check with the block count printed before", H + "# GPU blocks: 1478, # CPU blocks: 2048\n" + H + "ValueError: "
     "The model's max seq len (29000) is larger than the maximum number of tokens that can be stored in KV cache (23648).",
     "vllm.kv_cache_max_model_len_v0", "max_model_len_exceeds_kv_cache", "stated",
     {"num_blocks": 1478, "kv_cache_tokens": 23648}, ("max_model_len", "decrease")),
    ("engine dead during capture", "\n".join(CAPTURE + ["RuntimeError: Engine core initialization failed. "
                                                        "See root cause above. Failed core proc(s): {}"]),
     "vllm.cut.cudagraph_capture", "cuda_graph_oom", "truncated", {}, ("enforce_eager", "enable")),
    ("V0 engine dead during capture", "\n".join(CAPTURE + ["RuntimeError: Engine process failed to start. See stack "
                                                           "trace for the root cause."]),
     "vllm.cut.cudagraph_capture_v0", "cuda_graph_oom", "truncated", {}, ("enforce_eager", "enable")),
    ("raise site, message cut", "Traceback (most recent call last):\n"
     '  File "/usr/lib/python3/site-packages/vllm/worker/worker.py", line 493, in raise_if_cache_size_invalid\n'
     '    raise ValueError("No available memory for the cache blocks. "',
     "vllm.no_kv_cache_memory", "no_kv_cache_memory", "inferred", {}, ("gpu_memory_utilization", "increase")),
    ("KV cache full on three stats lines", "\n".join(STATS.format(s=s, w=43, kv=kv) for s, kv in ((1, 95.9), (11, 97.0),
                                                                                                  (21, 96.5))),
     "vllm.log.kv_cache_pressure", "kv_cache_pressure", "stated",
     {"kv_cache_utilization": 0.965, "requests_running": 18, "requests_waiting": 43}, ("max_num_seqs", "decrease")),
    ("KV cache at 9x% then full: one streak", "\n".join(STATS.format(s=s, w=5, kv=kv) for s, kv in ((1, 92.9), (11, 99.1),
                                                                                                      (21, 100.0))),
     "vllm.log.kv_cache_full", "kv_cache_pressure", "stated", {"kv_cache_utilization": 1.0, "requests_waiting": 5},
     ("max_num_seqs", "decrease")),
    ("preemption warnings, again and again", "\n".join(PREEMPT.format(g=g, tail="") for g in (1, 2, 3)),
     "vllm.log.preemptions", "preemption_storm", "stated", {}, ("max_num_seqs", "decrease")),
    ("one warning with a high count", PREEMPT.format(g=7, tail=" total_num_cumulative_preemption=51"),
     "vllm.log.preemptions_counted", "preemption_storm", "stated", {"preemptions": 51}, ("max_num_seqs", "decrease")),
    ("the count a paragraph below the warning (a blog's reflow)", "WARNING 01-21 05:05:14 engine.py:205] Sequence group\n"
     "cmpl-d5-0 is preempted by\nPreemptionMode.RECOMPUTE mode because there is not enough KV cache\nspace.\n\nThis can "
     "affect the end-to-end performance. Increase\ngpu_memory_utilization or tensor_parallel_size to provide more KV\n"
     "cache memory. total_num_cumulative_preemption=101", "vllm.log.preemptions_counted", "preemption_storm", "stated",
     {"preemptions": 101}, ("max_num_seqs", "decrease")),
    ("Ray folds three workers' warnings", PREEMPT.format(g=63, tail=" [repeated 2x across cluster]"),
     "vllm.log.preemptions", "preemption_storm", "stated", {}, ("max_num_seqs", "decrease")),
    ("over-long prompts refused again and again", "\n".join(REJECT.format(s=s) for s in (1, 2, 3)),
     "vllm.log.requests_rejected", "requests_rejected", "stated", {"max_model_len": 4096}, ("max_model_len", "increase")),
    ("prompts refused again and again, the request naming no max_tokens", "\n".join(
        f"ERROR 02-13 07:19:1{s} serving_chat.py:200] Error in preprocessing prompt inputs: This model's maximum "
        f"context length is 1536 tokens. However, your request has 41{s}6 input tokens. Please reduce the length of "
        "the input messages." for s in (1, 2, 3)),
     "vllm.log.requests_rejected", "requests_rejected", "stated", {"max_model_len": 1536}, ("max_model_len", "increase")),
    ("an OOM PyTorch could not word: NVML's assert on the allocator's OOM path", "(EngineCore_DP0 pid=9) ERROR 05-02 "
     "10:11:12 [core.py:708] RuntimeError: NVML_SUCCESS == r INTERNAL ASSERT FAILED at \"/pytorch/c10/cuda/"
     "CUDACachingAllocator.cpp\":1016, please report a bug to PyTorch.", "torch.oom_unreported_nvml",
     "cuda_oom_allocation", "inferred", {}, ("gpu_memory_utilization", "decrease")),
    ("a bare OOM behind vLLM's wrapper, its numbers replaced by placeholders",
     "[rank0]: RuntimeError: Error in model execution... CUDA out of memory. Tried to allocate X GiB. "
     "GPU 0 has a total capacity of Y GiB of which Z GiB is free. ...",
     "torch.cuda_oom_bare", "cuda_oom_allocation", "stated", {}, ("gpu_memory_utilization", "decrease")),
    ("XLA's TPU runtime out of HBM, its sizes in bare letters", "E0101 xla_util.cc:90] OP_REQUIRES failed at "
     "tpu_execute_op.cc:266 : RESOURCE_EXHAUSTED: Attempting to reserve 10.51G at the bottom of memory. That was not "
     "possible. There are 8.97G free, 0B reserved, and 8.97G reservable.", "xla.tpu_hbm_oom", "cuda_oom_allocation",
     "stated", {"tried_to_allocate_mib": 10762.24, "gpu_free_mib": 9185.28}, ("gpu_memory_utilization", "decrease")),
    ("XLA's TPU compiler out of HBM", "RuntimeError: Bad StatusOr access: RESOURCE_EXHAUSTED: XLA:TPU compile "
     "permanent error. Ran out of memory in memory space hbm. Used 20.44G of 15.75G hbm. Exceeded hbm capacity by "
     "4.70G.", "xla.tpu_hbm_oom", "cuda_oom_allocation", "stated", {"gpu_total_gib": 15.75},
     ("gpu_memory_utilization", "decrease")),
    ("PyTorch's OOM retold under its exception's name", "torch.OutOfMemoryError: Tried to allocate 2.37 GiB. GPU "
     "has 2.25 GiB free.", "torch.oom_class_retold", "cuda_oom_allocation", "inferred",
     {"tried_to_allocate_mib": 2426.88, "gpu_free_mib": 2304.0}, ("gpu_memory_utilization", "decrease")),
    ("Tenstorrent's allocator out of device DRAM", "2025-07-10 09:12:01.123 | critical | tt_metal | TT_FATAL: Out "
     "of Memory: Not enough space to allocate 1879048192 B DRAM buffer across 8 banks, where each bank needs to store "
     "234881024 B (allocated: 3993427840 B, free: 278913536 B, largest free block: 134217728 B)", "tt_metal.dram_oom",
     "cuda_oom_allocation", "stated", {"tried_to_allocate_mib": 1792.0, "gpu_free_mib": 265.99267578125},
     ("gpu_memory_utilization", "decrease")),
    ("Mamba align mode: one block past the token budget", "pydantic_core._pydantic_core.ValidationError: 1 validation "
     "error for VllmConfig\n  Assertion failed, In Mamba cache align mode, block_size (2096) must be <= "
     "max_num_batched_tokens (2048). [type=assertion_error, input_value=ArgsKwargs((), {}), input_type=ArgsKwargs]",
     "vllm.mamba_align_block_size", "other_config_error", "stated", {"block_size": 2096, "max_num_batched_tokens": 2048},
     ("max_num_batched_tokens", "increase")),
    ("the startup check quoted with placeholders for its amounts", "vllm serve fails with `Free memory on device "
     "cuda:0 (X/SystemRAM GiB) on startup is less than desired GPU memory utilization  (0.9, ...)`.",
     "vllm.startup_free_memory", "startup_free_memory_below_utilization", "stated", {"requested_utilization": 0.9},
     ("gpu_memory_utilization", "decrease")),
    ("the derived-length check retold up to its first clause", "Failed to deploy: User-specified max_model_len "
     "(8192) is greater than the derived max_model_len", "vllm.max_model_len_above_derived", "other_config_error",
     "stated", {"max_model_len": 8192}, ("max_model_len", "decrease")),
    ("a client whose max_tokens fills the context: every request refused",
     "ERROR 02-13 07:19:11 serving_chat.py:200] Error in preprocessing prompt inputs: This model's maximum context "
     "length is 8192 tokens. However, you requested 8204 tokens (12 in the messages, 8192 in the completion). Please "
     "reduce the length of the messages or completion.",
     "vllm.log.completion_fills_context", "requests_rejected", "inferred", {"max_tokens": 8192, "max_model_len": 8192},
     None),
    ("the same in the later wording", "openai.BadRequestError: Error code: 400 - {'message': \"'max_tokens' or "
     "'max_completion_tokens' is too large: 32768. This model's maximum context length is 32768 tokens and your "
     "request has 20 input tokens (32768 > 32768 - 20).\"}",
     "vllm.log.completion_fills_context", "requests_rejected", "inferred", {"max_tokens": 32768, "prompt_tokens": 20},
     None),
    ("the same in VLLMValidationError's wording (0.12+)", "openai.BadRequestError: Error code: 400 - {'error': "
     "{'message': \"This model's maximum context length is 32768 tokens. However, you requested 32768 output tokens "
     "and your prompt contains at least 25 input tokens, for a total of at least 32793 tokens.\"}}",
     "vllm.log.completion_fills_context", "requests_rejected", "inferred", {"max_tokens": 32768, "prompt_tokens": 25},
     None),
    ("the Mamba block check quoted from 'exceeds' on", "at 128k the hybrid model failed: `exceeds available Mamba "
     "cache blocks (95)... CUDA graph capture cannot proceed`",
     "vllm.mamba_cache_blocks", "other_config_error", "stated", {"num_blocks": 95}, ("max_num_seqs", "decrease")),
    ("V0 prompt limit below the config's max_seq_len", CONFIG + "\n" + "WARNING 07-12 15:03:35 scheduler.py:194] Input "
     "prompt (3622 tokens) is too long and exceeds limit of 2560",
     "vllm.log.prompt_over_batched_tokens", "batched_tokens_below_model_len", "inferred",
     {"max_num_batched_tokens": 2560}, ("max_num_batched_tokens", "increase")),
    ("V0 0.1's default token budget, no config line", "WARNING 07-12 15:03:35 scheduler.py:194] Input "
     "prompt (3622 tokens) is too long and exceeds limit of 2560",
     "vllm.log.prompt_over_batched_tokens", "batched_tokens_below_model_len", "inferred",
     {"max_num_batched_tokens": 2560}, ("max_num_batched_tokens", "increase")),
    # PyTorch's OOM quoted from its second sentence on, reflowed: the body names it; in capture, the graphs
    ("ROCm's OOM", "torch.OutOfMemoryError: HIP out of memory. Tried to allocate 816.00 MiB. GPU 0 has a total "
     "capacity of 61.35 GiB of which 655.29 MiB is free.", "torch.cuda_oom", "cuda_oom_allocation", "stated",
     {"tried_to_allocate_mib": 816.0, "gpu_total_gib": 61.35}, ("gpu_memory_utilization", "decrease")),
    ("Ascend's OOM (torch_npu)", "RuntimeError: NPU out of memory. Tried to allocate 2.00 GiB (NPU 0; 60.96 GiB total "
     "capacity; 55.91 GiB already allocated; 55.91 GiB current active; 1.80 GiB free; 58.73 GiB reserved in total by "
     "PyTorch)", "torch.cuda_oom", "cuda_oom_allocation", "stated",
     {"tried_to_allocate_mib": 2048.0, "gpu_total_gib": 60.96, "gpu_free_mib": 1843.2}, ("gpu_memory_utilization", "decrease")),
    ("PyTorch's OOM condensed, split after its first sentence", "torch.cuda.OutOfMemoryError: CUDA out of memory.\n"
     "Tried to allocate 23.04 GiB (GPU 0; 23.52 GiB total; 0 bytes free)", "torch.cuda_oom", "cuda_oom_allocation",
     "stated", {"tried_to_allocate_mib": 23592.96, "gpu_total_gib": 23.52, "gpu_free_mib": 0.0},
     ("gpu_memory_utilization", "decrease")),
    ("an OOM while V1 profiles CUDA-graph memory", '  File "/opt/vllm/v1/worker/gpu_worker.py", line 380, in '
     "determine_available_memory\n    estimate = self.model_runner.profile_cudagraph_memory()\ntorch.OutOfMemoryError: "
     "CUDA out of memory. Tried to allocate 1.00 GiB. GPU 0 has a total capacity of 23.00 GiB of which 0.50 GiB is free.",
     "torch.cuda_oom", "cuda_graph_oom", "stated", {"tried_to_allocate_mib": 1024.0}, ("enforce_eager", "enable")),
    ("V0's swap space above 70% of the host", "ValueError: Too large swap space. 32.00 GiB out of the 31.27 GiB total CPU "
     "memory is allocated for the swap space.", "vllm.swap_space_too_large", "other_config_error", "stated",
     {"swap_space_gib": 32.0, "host_total_gib": 31.27}, None),
    ("V0's swap space exhausted by preemptions", "RuntimeError: Aborted due to the lack of CPU swap space. Please increase "
     "the swap space to avoid this error.", "vllm.log.swap_exhausted", "preemption_storm", "stated", {},
     ("max_num_seqs", "decrease")),
    ("torch OOM, its head cut off", "    Tried to allocate 136.00 MiB. GPU 0 has a total capacity of 22.36 GiB of\n"
     "    which 120.88 MiB is free.", "torch.cuda_oom_body", "cuda_oom_allocation", "stated",
     {"tried_to_allocate_mib": 136.0, "gpu_total_gib": 22.36}, ("gpu_memory_utilization", "decrease")),
    ("torch OOM, its head cut off, during capture", H + "Capturing the model for CUDA graphs.\nTried to allocate 2.00 "
     "GiB. GPU 0 has a total capacity of 79.1 GiB of which 1.2 GiB is free.", "torch.cuda_oom_body", "cuda_graph_oom",
     "stated", {"tried_to_allocate_mib": 2048.0}, ("enforce_eager", "enable")),
    ("V1's own refusal, again and again", "\n".join("(EngineCore pid=7) ERROR 01-02 03:04:0{s} [core.py:1] ValueError: The "
                                                  "decoder prompt (length 90{s}0) is longer than the maximum model length "
                                                  "of 4096.".format(s=s) for s in (1, 2, 3)),
     "vllm.log.prompt_over_max_model_len", "requests_rejected", "stated", {"max_model_len": 4096},
     ("max_model_len", "increase")),
    ("a completion that does not fit beside the prompt, again and again", "\n".join(
        "openai.BadRequestError: 'max_tokens' or 'max_completion_tokens' is too large: 4000. This model's maximum "
        f"context length is 8192 tokens and your request has 500{s} input tokens (4000 > 8192 - 500{s})."
        for s in (1, 2, 3)),
     "vllm.log.completion_over_room", "requests_rejected", "stated", {"max_model_len": 8192, "max_tokens": 4000},
     ("max_model_len", "increase")),
    ("V1 0.7's multimodal refusal, again and again", "\n".join(
        f"ValueError: The prompt (total length 2593{s}) is too long to fit into the model (context length 4096)."
        for s in (1, 2, 3)),
     "vllm.log.prompt_over_context_length", "requests_rejected", "stated", {"max_model_len": 4096},
     ("max_model_len", "increase")),
    ("every sequence slot in use while requests wait, the KV cache with room", "\n".join(
        STATS.format(s=s, w=200 - s, kv=40.0 + s).replace("Running: 18 reqs", "Running: 256 reqs") for s in (1, 2)),
     "vllm.log.queue_at_sequence_cap", "queue_growth", "stated",
     {"requests_running": 256, "requests_waiting": 198, "kv_cache_utilization": 0.42}, ("max_num_seqs", "increase")),
    ("the same at the default of large cards", "\n".join(
        STATS.format(s=s, w=90, kv=30.0).replace("Running: 18 reqs", "Running: 1024 reqs") for s in (1, 2)),
     "vllm.log.queue_at_large_sequence_cap", "queue_growth", "stated", {"requests_running": 1024},
     ("max_num_seqs", "increase")),
    ("V0 prompt limit, again and again", "\n".join("WARNING 07-12 15:03:3{s} scheduler.py:194] Input prompt (5{s}00 "
                                                  "tokens) is too long and exceeds limit of 4096".format(s=s)
                                                  for s in (1, 2, 3)),
     "vllm.log.prompt_over_limit", "requests_rejected", "stated", {"prompt_limit": 4096}, ("max_model_len", "increase")),
    # a two-way raise with no budget before it: the likelier raise, and the remedy both share
    ("V1 KV check frame, no budget printed", "\n".join(KV_CHECK[1:]), "vllm.frame.kv_check_unknown_budget",
     "max_model_len_exceeds_kv_cache", "inferred", {}, ("gpu_memory_utilization", "increase")),
    # V0's Ray worker: the cache check failed after a positive block count (its message cut)
    ("V0 initialize_cache failed after 378 blocks", H + "# GPU blocks: 378, # CPU blocks: 1638\n(RayWorkerWrapper pid=9) "
     "ERROR 06-28 06:11:45 worker_base.py:145] Error executing method initialize_cache. This might cause deadlock in "
     "distributed execution.", "vllm.acct.cache_init_failed", "max_model_len_exceeds_kv_cache", "inferred",
     {"num_blocks": 378}, ("max_model_len", "decrease")),
    # V1's init_device before request_memory (0.9-0.13): its one `raise ValueError(` is the startup check
    ("V1 init_device raise site", "(EngineCore_DP0 pid=3997) ERROR 10-30 05:48:54 [core.py:779]   File \"/usr/lib/"
     "python3.12/dist-packages/vllm/v1/worker/gpu_worker.py\", line 207, in init_device\n(EngineCore_DP0 pid=3997) "
     "ERROR 10-30 05:48:54 [core.py:779]     raise ValueError(", "vllm.frame.init_device",
     "startup_free_memory_below_utilization", "inferred", {}, ("gpu_memory_utilization", "decrease")),
    # an issue title: the startup check in lower case after a full-width colon, cut after the utilization
    ("startup check in a title, cut after the utilization", "[CI Failure]: Error occurs when the instance starts "
     "up\uff1afree memory on device cuda:0 (46.95/79.18 GiB) on startup is less than desired GPU memory utilization "
     "(0.6, ", "vllm.startup_free_memory", "startup_free_memory_below_utilization", "stated",
     {"free_gib": 46.95, "total_gib": 79.18, "requested_utilization": 0.6}, ("gpu_memory_utilization", "decrease")),
    # V0's length check cut after its first clause (an issue title)
    ("V0 length check, first clause only", "ValueError: The model's max seq len (32768)\nI have 3 x 3090 GPU",
     "vllm.kv_cache_max_model_len_v0_cut", "max_model_len_exceeds_kv_cache", "stated", {"max_model_len": 32768},
     ("max_model_len", "decrease")),
    # V1's KV check retold without "the model's" and "the", over indented lines
    ("V1 KV check retold", "ERROR: To serve at least one request with max seq len (32768),\n       4.50 GiB KV cache "
     "is needed, which is larger than\n       available KV cache memory (3.66 GiB).", "vllm.kv_cache_max_model_len",
     "max_model_len_exceeds_kv_cache", "stated", {"max_model_len": 32768, "needed_kv_gib": 4.5, "available_kv_gib": 3.66},
     ("max_model_len", "decrease")),
    # the startup check retold with its numbers in vLLM's layout and other words between them
    ("startup check retold", "> vLLM refused to start: `Free memory on cuda:0 (38.74/121.63 GiB) < desired utilization "
     "(0.35, 42.57 GiB)`", "vllm.startup_free_memory_retold", "startup_free_memory_below_utilization", "inferred",
     {"free_gib": 38.74, "total_gib": 121.63, "requested_utilization": 0.35}, ("gpu_memory_utilization", "decrease")),
    # elided pastes: what lay between two parts of a message replaced by "..." or "…"
    ("torch OOM, all but its name and capacity elided", "- `torch.cuda.OutOfMemoryError ... GPU 0 has a total capacty "
     "of 10.75 GiB`", "torch.cuda_oom_body", "cuda_oom_allocation", "stated", {"gpu_total_gib": 10.75},
     ("gpu_memory_utilization", "decrease")),
    ("KV check with its estimate's lead-in elided", "ValueError: To serve at least one request with the model's max seq "
     "len (2048),\n0.66 GiB KV cache is needed, which is larger than the available KV cache\nmemory (0.64 GiB). ... "
     "estimated maximum model length is 1968.", "vllm.kv_cache_max_model_len", "max_model_len_exceeds_kv_cache",
     "stated", {"estimated_max_model_len": 1968}, ("max_model_len", "decrease")),
    # the same V0 check with no block count: the traceback cut at the call of the check
    ("V0 cache check cut at its call, no block count", "ERROR 04-28 15:55:45 worker_base.py:157] Traceback (most recent "
     "call last):\nERROR 04-28 15:55:45 worker_base.py:157]   File \"/x/vllm/worker/worker.py\", line 171, in "
     "initialize_cache\nERROR 04-28 15:55:45 worker_base.py:157]     raise_if_cache_size_invalid(num_gpu_blocks,",
     "vllm.frame.v0_cache_check_unknown_budget", "max_model_len_exceeds_kv_cache", "inferred", {},
     ("gpu_memory_utilization", "increase")),
    # a worker's error right after a positive block count, cut before it names the method
    ("V0 worker error cut after 507 blocks", H + "# GPU blocks: 507, # CPU blocks: 1024\nERROR 06-12 08:12:23 "
     "worker_base.py:145] Error execut", "vllm.frame.v0_worker_error_cut", "max_model_len_exceeds_kv_cache", "inferred",
     {"num_blocks": 507}, ("max_model_len", "decrease")),
    # the startup check retold: several runs' free memory as a range; a paraphrase without the total
    ("startup check with a range of free memory", "- Shared root cause: `ValueError: Free memory on device cuda:0 "
     "(58.33-58.44/63.98 GiB) on startup is less than desired GPU memory utilization (0.92, 58.87 GiB).`",
     "vllm.startup_free_memory_paraphrased", "startup_free_memory_below_utilization", "inferred",
     {"free_gib": 58.33, "total_gib": 63.98, "requested_utilization": 0.92}, ("gpu_memory_utilization", "decrease")),
    ("startup check paraphrased", "- vLLM deployment fails with error: `Free memory (17.88 GB) < desired (18.85 GB at 0.8 "
     "utilization)`", "vllm.startup_free_memory_paraphrased", "startup_free_memory_below_utilization", "inferred",
     {"free_gib": 17.88, "requested_gib": 18.85, "requested_utilization": 0.8}, ("gpu_memory_utilization", "decrease")),
    # a PyTorch OOM inside the memory profiling run: its dummy batch is max_num_seqs requests
    ("OOM in V0's multimodal profile run", H + "Starting profile run for multi-modal models.\n"
     "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 19.63 GiB. GPU 3 has a total capacity of 79.15 GiB "
     "of which 17.73 GiB is free.", "torch.cuda_oom", "cuda_oom_allocation", "stated",
     {"tried_to_allocate_mib": 20101.12}, ("max_num_seqs", "decrease")),
    # a traceback cut inside the sampler's warm-up, a dummy batch of max_num_seqs requests
    ("traceback cut in the sampler warm-up", W + "ERROR 11-19 12:16:36 [core.py:842] Traceback (most recent call "
     "last):\n" + FRAME.format(path="v1/worker/gpu_worker.py", n=507, fn="compile_or_warm_up_model") + "\n" + W +
     "ERROR 11-19 12:16:36 [core.py:842]     self.model_runner._dummy_sampler_run(hidden_states=last_hidden_states)",
     "vllm.cut.dummy_batch", "cuda_oom_allocation", "truncated", {}, ("max_num_seqs", "decrease")),
    # blind round 9: PyTorch's OOM retyped into a summary, and cut inside its free amount by a title's limit
    ("torch OOM retyped as a summary", "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 1 has 23.56 GiB total, "
     "1.08 GiB free,\n22.46 GiB in use. (Model loading took 13.31 GiB)", "torch.cuda_oom_retold", "cuda_oom_allocation",
     "stated", {"tried_to_allocate_mib": 2048.0, "gpu_total_gib": 23.56, "gpu_free_mib": 1105.92},
     ("gpu_memory_utilization", "decrease")),
    ("torch OOM cut inside its free amount", "[Bug]: orch.OutOfMemoryError: CUDA out of memory. Tried to allocate 350.00 "
     "MiB. GPU 0 has a total capacity of 23.68 GiB of which 212.81", "torch.cuda_oom_retold", "cuda_oom_allocation",
     "stated", {"tried_to_allocate_mib": 350.0, "gpu_total_gib": 23.68}, ("gpu_memory_utilization", "decrease")),
    # the accelerator's OOM with no size: torch_npu's op check, IPEX's XPU allocator, a traceback joined into one line
    ("torch_npu's OOM with a device id only", "RuntimeError: NPU out of memory. device id: 3", "torch.device_oom_bare",
     "cuda_oom_allocation", "stated", {}, ("gpu_memory_utilization", "decrease")),
    ("IPEX's XPU OOM", "RuntimeError: XPU out of memory, please use `empty_cache` to release all unoccupied cached "
     "memory.", "torch.device_oom_bare", "cuda_oom_allocation", "stated", {}, ("gpu_memory_utilization", "decrease")),
    ("NPU OOM at the end of a traceback joined into one line", "(VllmWorkerProcess pid=7) ERROR 07-03 19:33:28 "
     "[multiproc_worker_utils.py:238] result_tensor = torch.cat(ordered_tensors, dim=-1) (VllmWorkerProcess pid=7) "
     "ERROR 07-03 19:33:28 [multiproc_worker_utils.py:238] RuntimeError: NPU out of memory.", "torch.device_oom_bare",
     "cuda_oom_allocation", "stated", {}, ("gpu_memory_utilization", "decrease")),
    ("CUDA OOM cut after its first sentence", "[Bug]: torch.OutOfMemoryError: CUDA out of memory.", "torch.cuda_oom_bare",
     "cuda_oom_allocation", "stated", {}, ("gpu_memory_utilization", "decrease")),
    ("XPU OOM named in backticks in a title", "`XPU out of memory` error with `-tp=4`, but model loads fine with `-tp=2`",
     "torch.device_oom_quoted", "cuda_oom_allocation", "inferred", {}, ("gpu_memory_utilization", "decrease")),
    ("CUDA OOM named in backticks in a title", "`CUDA out of memory` with --tensor-parallel-size 4 on two cards",
     "torch.cuda_oom_quoted", "cuda_oom_allocation", "inferred", {}, ("gpu_memory_utilization", "decrease")),
    # PyTorch's caching allocator's warning before its retry, sizes in bytes
    ("caching allocator's OOM warning in bytes", "[rank5]:[W... CUDACachingAllocator.cpp:3933] memory allocation failed "
     "with OOM on device 5\n  while trying to allocate 671088640 bytes (free: 513736704, total: 85095874560).",
     "torch.allocator_oom_warning", "cuda_oom_allocation", "inferred",
     {"tried_to_allocate_mib": 640.0, "gpu_free_mib": 489.9375, "gpu_total_gib": 79.2517}, ("gpu_memory_utilization", "decrease")),
    # the startup check as a fork words it, and the CPU worker's with other verbs: one family
    ("startup check reworded by a fork", "(EngineCore_DP0 pid=727) ERROR 02-12 15:44:57 [core.py:966] ValueError: "
     "Available memory on device cuda:0 (28.49/124.0 GiB) is below required GPU memory utilization (0.95, 117.8 GiB). "
     "Reduce GPU memory utilization or decrease GPU memory used by other processes.", "vllm.startup_free_memory_family",
     "startup_free_memory_below_utilization", "inferred",
     {"free_gib": 28.49, "total_gib": 124.0, "requested_utilization": 0.95, "requested_gib": 117.8},
     ("gpu_memory_utilization", "decrease")),
    ("CPU startup check with other verbs", "ValueError: Free memory on node 1 (8.2/9.71 GiB) is lower than the required "
     "CPU memory utilization (1.0, 9.71 GiB).", "vllm.startup_free_memory_family", "startup_free_memory_below_utilization",
     "inferred", {"free_gib": 8.2, "total_gib": 9.71, "requested_utilization": 1.0}, ("gpu_memory_utilization", "decrease")),
    # vllm-metal's paged-attention planner: the breakdown re-wrapped; the later wording names the flag
    ("vllm-metal KV budget, re-wrapped", "ValueError: Paged attention: not enough Metal memory for KV cache.\n"
     "  metal_limit=26.80GB, fraction=0.98, usable_metal=26.26GB,\n  model_memory=19.74GB, overhead=2.09GB, "
     "kv_budget=-12.05GB.", "vllm_metal.paged_kv_budget", "no_kv_cache_memory", "stated",
     {"available_kv_gib": -12.05, "metal_limit_gib": 26.8}, ("gpu_memory_utilization", "increase")),
    ("vllm-metal KV budget naming the flag", "Paged attention: not enough Metal memory for KV cache. metal_limit=12.71GB, "
     "fraction=0.05, usable_metal=0.64GB, model_memory=0.26GB, overhead=0.49GB, kv_budget=-0.11GB. Mitigations: "
     "increase --gpu-memory-utilization (currently 0.05); use a smaller or more quantized model.",
     "vllm_metal.paged_kv_budget", "no_kv_cache_memory", "stated", {"available_kv_gib": -0.11, "requested_utilization": 0.05},
     ("gpu_memory_utilization", "increase")),
    # a hybrid model's state reservation adds its own fields (each "=" more) before the budget
    ("vllm-metal KV budget after the hybrid reservation", "ValueError: Paged attention: not enough Metal memory "
     "for KV cache.\nmetal_limit=21.40GB, fraction=0.6, usable_metal=12.84GB,\nmodel_memory=9.10GB, overhead=3.02GB,\n"
     "kv_budget_before_hybrid=0.72GB,\nhybrid_gdn_state=lazy (growth_peak_reserve=0.31GB, 40.2MB/seq * peak_slots=8/"
     "max_num_seqs=128),\nkv_budget=-0.12GB.\nMitigations: increase VLLM_METAL_MEMORY_FRACTION; use a smaller model.",
     "vllm_metal.paged_kv_budget", "no_kv_cache_memory", "stated", {"available_kv_gib": -0.12, "metal_limit_gib": 21.4},
     ("gpu_memory_utilization", "increase")),
    ("vllm-metal budget holding fewer blocks than the floor", "ValueError: Paged attention: computed num_blocks too low "
     "(5 < minimum 16). metal_limit=17.18GB, fraction=0.5, usable_metal=8.59GB, model_memory=8.02GB, overhead=0.52GB, "
     "kv_budget=0.05GB, per_block_bytes=9437184. Mitigations: increase VLLM_METAL_MEMORY_FRACTION, use a smaller model.",
     "vllm_metal.paged_blocks_below_minimum", "no_kv_cache_memory", "stated", {"num_blocks": 5, "min_blocks": 16},
     ("gpu_memory_utilization", "increase")),
    # --- a message cut at the end of its line (a viewer that cuts long lines, an issue title at
    # GitHub's limit) after the words that state it (loader.py cut_after)
    ("startup check cut after 'less than desired'", "(EngineCore_DP0 pid=9) ERROR 03-02 10:00:01 [core.py:866] "
     "ValueError: Free memory on device (3.02/15.57 GiB) on startup is less than desired GPU memory ut",
     "vllm.startup_free_memory", "startup_free_memory_below_utilization", "stated", {"free_gib": 3.02, "total_gib": 15.57},
     ("gpu_memory_utilization", "decrease")),
    ("startup check: a paste's first line, wrapped after 'on startup is'", "ValueError: Free memory on device cuda:2 "
     "(40.5/79.19 GiB) on startup is\n\n(the rest of the message was in a screenshot)", "vllm.startup_free_memory",
     "startup_free_memory_below_utilization", "stated", {"free_gib": 40.5, "total_gib": 79.19},
     ("gpu_memory_utilization", "decrease")),
    ("CPU startup check cut", "ValueError: Available memory on node 1 (6.4/31.2 GiB) on startup is less than desired CPU m",
     "vllm.cpu_startup_free_memory", "startup_free_memory_below_utilization", "stated", {"free_gib": 6.4, "total_gib": 31.2},
     ("gpu_memory_utilization", "decrease")),
    ("sampler warm-up OOM cut in its count", "(VllmWorker rank=0 pid=31) ERROR 01-05 02:03:04 [multiproc_executor.py:9] "
     "RuntimeError: CUDA out of memory occurred when warming up sampler with 10", "vllm.warmup_oom", "cuda_oom_allocation",
     "stated", {}, ("max_num_seqs", "decrease")),
    ("V0 KV check cut before its token count", "[Bug]: ValueError: The model's max seq len (65536) is larger than the "
     "maximum number of tokens that can be stor", "vllm.kv_cache_max_model_len_v0", "max_model_len_exceeds_kv_cache",
     "stated", {"max_model_len": 65536}, ("max_model_len", "decrease")),
    ("batched-token check cut in its advice", "ValueError: max_num_batched_tokens (4096) is smaller than max_model_len "
     "(10240). This effectively limits the maximum seq", "vllm.batched_tokens_below_model_len",
     "batched_tokens_below_model_len", "stated", {"max_num_batched_tokens": 4096, "max_model_len": 10240},
     ("max_num_batched_tokens", "increase")),
    ("derived-length error cut inside its parenthesis", "[rank1]: ValueError: User-specified max_model_len (200000) is "
     "greater than the derived max_model_len (max_position_embeddings=131072 or model_max_length=None in mo",
     "vllm.max_model_len_above_derived_cut", "other_config_error", "stated",
     {"max_model_len": 200000, "derived_max_model_len": 131072}, ("max_model_len", "decrease")),
    # --- fixer A: the phase an OOM comes in, and accelerator OOMs in the shapes people paste
    ("OOM after the weights, before the KV cache is sized: the profile run",
     V1 + "Model loading took 16.56 GiB and 2.8 seconds\n" + W + "ERROR 08-20 03:10:01 [core.py:467] CUDA out of memory. "
     "Tried to allocate 33.75 GiB. GPU 0 has a total capacity of 44.40 GiB of which 26.88 GiB is free.",
     "torch.cuda_oom", "cuda_oom_allocation", "stated", {"tried_to_allocate_mib": 34560.0},
     ("max_num_seqs", "decrease")),
    ("OOM after the KV cache is sized, in capture: not the profile run",
     "\n".join(CAPTURE) + "\n" + W + "ERROR 08-20 03:10:01 [core.py:467] torch.OutOfMemoryError: CUDA out of memory. "
     "Tried to allocate 136.00 MiB. GPU 0 has a total capacity of 22.36 GiB of which 120.88 MiB is free.",
     "torch.cuda_oom", "cuda_graph_oom", "stated", {"gpu_total_gib": 22.36}, ("enforce_eager", "enable")),
    ("XLA:TPU compiler out of SMEM", "> RuntimeError: Bad StatusOr access: RESOURCE_EXHAUSTED: XLA:TPU compile permanent "
     "error. Ran out of memory in memory space smem. Used 1.00M of 1.00M smem. Exceeded smem capacity by 1.7K.",
     "xla.tpu_smem_oom", "cuda_oom_allocation", "stated", {}, ("max_model_len", "decrease")),
    ("one sentence of PyTorch's OOM: another process's memory", "```\nProcess 60 has 17179869184.00 GiB memory in use.\n```",
     "torch.oom_process_sentence", "cuda_oom_allocation", "inferred", {}, ("gpu_memory_utilization", "decrease")),
    ("one sentence of PyTorch's OOM: this process's memory", "Including non-PyTorch memory, this process has 22.82 GiB "
     "memory in use.", "torch.oom_process_sentence", "cuda_oom_allocation", "inferred", {},
     ("gpu_memory_utilization", "decrease")),
    ("CANN's allocation failure in ACL graph capture",
     " RuntimeError: Worker failed with error 'NPUModelRunner init failed, error is capture_begin:build/CMakeFiles/"
     "torch_npu.dir/compiler_depend.ts:214 NPU function error: c10_npu::acl::AclmdlRICaptureBegin(capture_stream_, "
     "capture_mode), error code is 207005\n(EngineCore pid=1802921) [ERROR] 2026-04-17-09:16:39 (PID:1802934, Device:0, "
     "RankID:-1) ERR00100 PTA call acl api failed\n(EngineCore pid=1802921) [Error]: Failed to apply for memory.\n"
     "(EngineCore pid=1802921)         Check the remaining storage space in the hardware environment.",
     "torch_npu.acl_memory_apply", "cuda_graph_oom", "stated", {}, ("enforce_eager", "enable")),
    ("CANN's allocation failure outside capture",
     "(Worker pid=7) [ERROR] 2026-04-17-09:16:39 (PID:7, Device:0, RankID:-1) ERR00100 PTA call acl api failed\n"
     "(Worker pid=7) [Error]: Failed to apply for memory.\n(Worker pid=7)         Check the remaining storage space in "
     "the hardware environment.", "torch_npu.acl_memory_apply", "cuda_oom_allocation", "stated", {},
     ("gpu_memory_utilization", "decrease")),
    ("the Neuron runtime out of device memory, which names no size",
     'ERROR 02-11 14:20:32 engine.py:389]     return torch.ops.neuron._parallel_to_neuron(tensors)\n'
     'ERROR 02-11 14:20:32 engine.py:389] RuntimeError: nrt_tensor_allocate status=4 message="Allocation Failure"',
     "neuron.nrt_allocation_failure", "cuda_oom_allocation", "stated", {}, ("max_model_len", "decrease")),
    ("Intel XPU's OOM in the old layout, which has no free figure",
     "RuntimeError: XPU out of memory. Tried to allocate 130.00 MiB (GPU 0; 15.11 GiB total capacity; 11.09 GiB "
     "already allocated; 11.23 GiB reserved in total by PyTorch)", "torch.cuda_oom", "cuda_oom_allocation", "stated",
     {"tried_to_allocate_mib": 130.0, "gpu_total_gib": 15.11}, ("gpu_memory_utilization", "decrease")),
    ("torch_npu's workspace allocator out of memory",
     "NPU out of memory. NPUWorkspaceAllocator tried to allocate 180.00 MiB(NPU 1; 60.96 GiB total capacity; "
     "86.81 MiB free). If you want to reduce memory usage, take a try to set the environment variable "
     "TASK_QUEUE_ENABLE=1.", "torch_npu.workspace_oom", "cuda_oom_allocation", "stated",
     {"tried_to_allocate_mib": 180.0, "gpu_total_gib": 60.96, "gpu_free_mib": 86.81}, ("gpu_memory_utilization", "decrease")),
    ("Gaudi's device memory failed, as its bridge reports it",
     "ERROR 09-10 02:01:57 async_llm_engine.py:43] RuntimeError: [Rank:0] FATAL ERROR :: MODULE:PT_DEVMEM "
     "Allocation failed for size::268435456 (256)MB", "habana.pt_allocation_failed", "cuda_oom_allocation", "stated",
     {"tried_to_allocate_mib": 256.0}, ("gpu_memory_utilization", "decrease")),
    ("Gaudi's workspace allocation failed",
     "RuntimeError: [Rank:0] FATAL ERROR :: MODULE:PT_SYNHELPER workspace Allocation of size ::52561502464 failed!",
     "habana.pt_allocation_failed", "cuda_oom_allocation", "stated", {"tried_to_allocate_mib": 50126.564453125},
     ("gpu_memory_utilization", "decrease")),
    ("the Spyre plugin's warmup shape longer than max_model_len",
     "RuntimeError: Warmup shape [4, 128, 20] results in a maximum sequence length of 148 which is longer that what the "
     "model supports (128)", "vllm_spyre.warmup_shape_over_max_model_len", "other_config_error", "stated",
     {"requested_tokens": 148, "max_model_len": 128}, None),
    ("the same check printed with its placeholders unformatted",
     "RuntimeError: Warmup shape [4, {shape['prompt_length']}, {shape['new_tokens']}] results in a maximum sequence "
     "length of {max_seq_len} which is longer that what the model supports ({max_model_len})",
     "vllm_spyre.warmup_shape_over_max_model_len", "other_config_error", "stated", {}, None),
    ("OOM sizes retold beside a frame", "  o = torch.empty_like(v)   \u2190 OOM HERE: tried 50 MiB, 32 MiB free",
     "torch.oom_retold_sizes", "cuda_oom_allocation", "inferred", {"tried_to_allocate_mib": 50.0, "gpu_free_mib": 32.0},
     ("gpu_memory_utilization", "decrease")),
    ("OOM sizes retold as needed and free", "- With PN31: dies at `chunk_fwd_o` (`o = torch.empty_like(v)`, 50 MiB "
     "needed, ~26 MiB free) at 29K probe depth", "torch.oom_retold_sizes", "cuda_oom_allocation", "inferred",
     {"tried_to_allocate_mib": 50.0, "gpu_free_mib": 26.0}, ("gpu_memory_utilization", "decrease")),
    ("capture OOM told by a person", "I found that during multi-node training, the OOM occurs during the process of "
     "capturing CUDA graphs.", "vllm.capture_oom_told", "cuda_graph_oom", "inferred", {}, ("enforce_eager", "enable")),
    ("capture OOM in an issue's title", "# [Bug] CUDA graph memory estimate under-reserves \u2192 OOM during graph "
     "capture at high `--gpu-memory-utilization`", "vllm.capture_oom_told", "cuda_graph_oom", "inferred", {},
     ("gpu_memory_utilization", "decrease")),
    ("capture OOMed, told in a footnote", "vLLM was run in eager\nmode (CUDA-graph capture OOMed the memory-capped VM), "
     "which if anything understates the gap.", "vllm.capture_oom_told", "cuda_graph_oom", "inferred", {},
     ("enforce_eager", "enable")),
    ("V0 worker's OOM in a record its next line continues", "[rank0]: torch.OutOfMemoryError: Error in model "
     "execution... CUDA out of memory. Tried to allocate X GiB. GPU 0 has a total capacity of Y GiB of which Z GiB "
     "is free. ...\n\u30a8\u30e9\u30fc\u30e1\u30c3\u30bb\u30fc\u30b8\u304c\u793a\u3059\u901a\u308a\u3002",
     "torch.cuda_oom_bare", "cuda_oom_allocation", "stated", {}, ("gpu_memory_utilization", "decrease")),
    ("ROCm's hipified driver error in capture_end", "\n".join(CAPTURE) + "\n" + W + "ERROR 04-30 16:21:27 "
     "[multiproc_executor.py:380] RuntimeError: HIP error: out of memory", "torch.cuda_driver_oom", "cuda_graph_oom",
     "stated", {}, ("enforce_eager", "enable")),
    ("V0 profile that measured neither weights nor activations", H + "the current vLLM instance can use "
     "total_gpu_memory (79.10GiB) x gpu_memory_utilization (0.90) = 71.19GiB\n" + H + "model weights take 0.00GiB; "
     "non_torch_memory takes 0.00GiB; PyTorch activation peak memory takes 0.00GiB; the rest of the memory reserved "
     "for KV Cache is 71.19GiB.", "vllm.acct.profile_saw_nothing", "cuda_oom_allocation", "inferred",
     {"available_kv_gib": 71.19, "requested_utilization": 0.9}, ("gpu_memory_utilization", "decrease")),
    # --- fixer B: the startup and KV checks retold in a report's own sentence, or quoted in part
    ("startup check retold: free vs required at a utilization", "- **LoRA:** the next test started while the last "
     "EngineCore still held ~165 GiB (only 26 GiB free vs 163 GiB required at 0.85 util).",
     "vllm.startup_free_memory_versus", "startup_free_memory_below_utilization", "inferred",
     {"free_gib": 26.0, "requested_gib": 163.0, "requested_utilization": 0.85}, ("gpu_memory_utilization", "decrease")),
    ("startup check retold: free vs needed with the utilization flag", "leaving only 4.54 GiB free vs the 4.64 GiB "
     "needed for warmup with `gpu_memory_utilization=0.9`.", "vllm.startup_free_memory_versus",
     "startup_free_memory_below_utilization", "inferred",
     {"free_gib": 4.54, "requested_gib": 4.64, "requested_utilization": 0.9}, ("gpu_memory_utilization", "decrease")),
    ("startup check retold: free vs requested, the flag in parentheses", "GPU 0 had 5.2 GiB free vs 21.6 GiB "
     "requested (gpu_memory_utilization=0.9)", "vllm.startup_free_memory_versus",
     "startup_free_memory_below_utilization", "inferred",
     {"free_gib": 5.2, "requested_gib": 21.6, "requested_utilization": 0.9}, ("gpu_memory_utilization", "decrease")),
    ("startup check retold: free, then what the utilization asks for", "only 7.1 GiB free, but "
     "gpu_memory_utilization=0.90 asks for about 21.7 GiB per card", "vllm.startup_free_memory_versus",
     "startup_free_memory_below_utilization", "inferred",
     {"free_gib": 7.1, "requested_gib": 21.7, "requested_utilization": 0.9}, ("gpu_memory_utilization", "decrease")),
    ("startup error quoted up to its numbers", "The ValueError text was `Free memory on device cuda:0 (55.87/119.56 "
     "GiB)`. That's ~MemAvailable.", "vllm.startup_free_memory_head", "startup_free_memory_below_utilization",
     "inferred", {"free_gib": 55.87, "total_gib": 119.56}, ("gpu_memory_utilization", "decrease")),
    ("KV check retold: needed, then available", "3. KV-Cache Memory Fehler (5.62 GiB needed, only 3.06 GiB available)",
     "vllm.kv_cache_max_model_len_retold", "max_model_len_exceeds_kv_cache", "inferred",
     {"needed_kv_gib": 5.62, "available_kv_gib": 3.06}, ("max_model_len", "decrease")),
    ("KV check retold: what is left, then the length's need", "at 0.90 the profiler leaves **1.9 GiB** for KV cache but "
     "the 65536 max-model-len needs **2.45 GiB**, so the engine failed", "vllm.kv_cache_max_model_len_retold_left",
     "max_model_len_exceeds_kv_cache", "inferred", {"available_kv_gib": 1.9, "needed_kv_gib": 2.45, "max_model_len": 65536},
     ("max_model_len", "decrease")),
    ("V0 CPU backend: no KV blocks in host memory", "INFO 05-01 10:00:05 cpu_executor.py:72] # CPU blocks: 0",
     "vllm.acct.cpu_backend_no_blocks", "no_kv_cache_memory", "inferred", {"num_blocks": 0}, None),
    ("V0 CPU backend: blocks below one sequence", CONFIG.replace("4096", "8192") + "\nINFO 05-01 10:00:05 "
     "cpu_executor.py:72] # CPU blocks: 256", "vllm.acct.cpu_backend_blocks_below_max_model_len",
     "max_model_len_exceeds_kv_cache", "inferred", {"num_blocks": 256, "max_model_len": 8192}, ("max_model_len", "decrease")),
    ("KV budget of zero, retold", "the available KV cache memory was -0.5 GiB on the second instance",
     "vllm.acct.negative_kv_retold", "no_kv_cache_memory", "inferred", {"available_kv_gib": -0.5},
     ("gpu_memory_utilization", "increase")),
    ("KV budget of zero, by vLLM's variable", "in which `available_kv_cache_memory` turned out to be 0.",
     "vllm.acct.negative_kv_variable", "no_kv_cache_memory", "inferred", {"available_kv_gib": 0.0},
     ("gpu_memory_utilization", "increase")),
    ("V1 concurrency rounded to 0.01x, its exact token count beside it", V1 + "GPU KV cache size: 16 tokens\n" + V1
     + "Maximum concurrency for 2,048 tokens per request: 0.01x", "vllm.acct.concurrency_below_one",
     "max_model_len_exceeds_kv_cache", "inferred", {"kv_cache_tokens": 16, "max_model_len": 2048},
     ("max_model_len", "decrease")),
    ("derived-length error re-wrapped and elided", "pydantic_core._pydantic_core.ValidationError: 1 validation error "
     "for ModelConfig\n  Value error, User-specified max_model_len (1048576) is greater than the derived\n  "
     "max_model_len (max_position_embeddings=262144.0 ...). To allow overriding this\n  maximum, set the env var "
     "VLLM_ALLOW_LONG_MAX_MODEL_LEN=1. ...", "vllm.max_model_len_above_derived", "other_config_error", "stated",
     {"max_model_len": 1048576, "derived_max_model_len": 262144}, ("max_model_len", "decrease")),
    ("derived-length error elided before its file", "Value error, User-specified max_model_len (262144) is greater "
     "than the derived\nmax_model_len (max_position_embeddings=40960 ... in model's config.json).\nTo allow "
     "overriding this maximum, set the env var VLLM_ALLOW_LONG_MAX_MODEL_LEN=1.", "vllm.max_model_len_above_derived",
     "other_config_error", "stated", {"max_model_len": 262144, "derived_max_model_len": 40960},
     ("max_model_len", "decrease")),
    ("V0 on Gaudi: no HPU blocks", "INFO 05-01 10:00:05 habana_executor.py:85] # HPU blocks: 0, # CPU blocks: 256",
     "vllm.acct.no_gpu_blocks", "no_kv_cache_memory", "inferred", {"num_blocks": 0}, ("gpu_memory_utilization", "increase")),
    # a person's notes that set a figure of the log in Markdown bold: the bold is taken off (paste.py)
    ("KV budget retold with its figure in bold", "Result: EngineCore ValueError. Model load 27.31 GiB/card.\n"
     "  Available KV cache memory: **-0.93 GiB**.\n  No cache blocks. Workers died.", "vllm.acct.negative_kv",
     "no_kv_cache_memory", "inferred", {"available_kv_gib": -0.93}, ("gpu_memory_utilization", "increase")),
    # the KV check retold: the estimate starts a sentence of its own, or the middle is elided up to it
    ("KV check retold, its estimate a sentence of its own", "ValueError: To serve at least one request with the "
     "model's max seq len\n(1000000), 3.09 GiB KV cache is needed, which is larger than the available\nKV cache "
     "memory (0.24 GiB). Estimated maximum model length is 57344.", "vllm.kv_cache_max_model_len",
     "max_model_len_exceeds_kv_cache", "stated", {"estimated_max_model_len": 57344, "available_kv_gib": 0.24},
     ("max_model_len", "decrease")),
    ("KV check elided from its need to its estimate", "ValueError: To serve at least one request with the model's max "
     "seq len (1000000),\n3.15 GiB KV cache is needed ... estimated maximum model length is 77440.",
     "vllm.kv_cache_max_model_len", "max_model_len_exceeds_kv_cache", "stated",
     {"max_model_len": 1000000, "needed_kv_gib": 3.15, "estimated_max_model_len": 77440}, ("max_model_len", "decrease")),
    # the CPU backend's KV budget is its "Available KV cache memory": the no-KV error after it has its figures
    ("CPU backend: no KV budget, then the no-KV error", "(Worker pid=36) INFO 08-18 02:57:12 [cpu_worker.py:235] "
     "Explicitly set (0.0/11.65) GiB for KV cache on node 0.\n(EngineCore pid=25) ERROR 08-18 02:57:12 [core.py:1231] "
     "ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when initializing "
     "the engine (this flag also controls CPU memory reservation on the CPU backend, despite its name).",
     "vllm.no_kv_cache_memory", "no_kv_cache_memory", "stated", {"available_kv_gib": 0.0, "total_gib": 11.65},
     ("gpu_memory_utilization", "increase")),
    # the KV check with its middle elided up to the memory it names
    ("KV check elided up to the available memory", "the classic KV memory error: `0.38 GiB KV cache is needed ... "
     "available KV cache memory\n(0.14 GiB)`.", "vllm.kv_cache_max_model_len_shortened",
     "max_model_len_exceeds_kv_cache", "stated", {"needed_kv_gib": 0.38, "available_kv_gib": 0.14},
     ("max_model_len", "decrease")),
    # the derived-length error in a table cell: the parenthesis elided without its key, the period lost
    ("derived-length error elided without its key", "| `ValueError: User-specified max_model_len (16384) is greater "
     "than the derived max_model_len (8192...)` | capped at 8192 | do not raise |", "vllm.max_model_len_above_derived",
     "other_config_error", "stated", {"max_model_len": 16384, "derived_max_model_len": 8192},
     ("max_model_len", "decrease")),
    # the startup check quoted from its middle on: its own clause, in no other message
    ("startup check from its middle on", "it fails the pre-check (`Free memory on device xpu:0 … less than desired "
     "GPU memory utilization`) regardless", "vllm.startup_free_memory_tail", "startup_free_memory_below_utilization",
     "stated", {}, ("gpu_memory_utilization", "decrease")),
    ("startup check's tail with its numbers", "ValueError: ... is less than desired GPU memory utilization (0.95, "
     "15.13 GiB). Decrease GPU memory utilization or reduce GPU memory used by other processes.",
     "vllm.startup_free_memory_tail", "startup_free_memory_below_utilization", "stated",
     {"requested_utilization": 0.95, "requested_gib": 15.13}, ("gpu_memory_utilization", "decrease")),
]


@pytest.mark.parametrize("name, log, rule, kind, confidence, numbers, direction", CASES, ids=[c[0] for c in CASES])
def test_each_mechanism_names_the_failure_with_its_confidence(name, log, rule, kind, confidence, numbers, direction):
    f = diagnose(log).primary
    assert f is not None, name
    assert (f.rule, f.kind, f.confidence) == (rule, kind, confidence)
    assert {k: f.numbers.get(k) for k in numbers} == pytest.approx(numbers)
    if direction is None:  # not a parameter selfheal moves: told, never tuned
        assert f.fix_direction == {} and f.action == "alert"
    else:
        assert f.fix_direction.get(direction[0]) == direction[1]
    if confidence == "truncated":  # the policy: told, never tuned
        assert f.action == "alert" and f.fix == {} and "lower confidence" in f.note


SILENT = [
    # Triton's driver on a fault that is no memory's
    V1 + "RuntimeError: Triton Error [CUDA]: an illegal memory access was encountered",
    # the derived-length sentence as the WARNING vLLM logs when the override is allowed, cut where
    # the error's would be: no exception says it failed
    "WARNING 03-02 10:00:01 [model.py:1] User-specified max_model_len (200000) is greater than the derived "
    "max_model_len (max_position_embeddings=131072 or model_max_length=None in mo",
    # the healthy start's hint in the startup check's words, cut as long lines are
    "INFO 03-02 10:00:01 [gpu_worker.py:1] Free memory on device (22.8/23.54 GiB) on startup. Desired GPU memory util",
    "INFO 03-02 10:00:01 [gpu_worker.py:1] Free memory on device (22.8/23.54 GiB) on startup.",
    # the Metal planner's report of a plan that fits: the budget and the blocks it holds
    "Paged attention memory breakdown: metal_limit=24.10GB, fraction=0.7, usable_metal=16.87GB, model_memory=4.40GB, "
    "overhead=1.02GB, kv_budget=11.45GB, per_block_bytes=2097152, num_blocks=5459, max_tokens_cached=87344",
    "\n".join(STATS.format(s=s, w=0, kv=kv) for s, kv in ((1, 94.9), (11, 99.3))),
    "\n".join(STATS.format(s=s, w=0, kv=kv) for s, kv in ((1, 93.5), (11, 94.0), (21, 94.4), (31, 94.9))),  # no queue
    H + "# GPU blocks: 2575, # CPU blocks: 2048",                                # healthy block count
    H + "Maximum concurrency for 4096 tokens per request: 12.50x",
    V1 + "Available KV cache memory: 20.1 GiB",
    "Available KV cache memory: **20.1 GiB** on each card, plenty.",            # bold, and healthy
    # a table of a healthy start's figures, keyed as the startup check's head reads
    "- **Free memory on device:** 77.64/79.18 GiB on startup\n- **Desired GPU utilization:** 0.9 (71.26 GiB)",
    # the derived-length WARNING (the override allowed) with its parenthesis elided
    "WARNING 03-02 10:00:01 [model.py:1] User-specified max_model_len (200000) is greater than the derived "
    "max_model_len (max_position_embeddings=131072 ...). Make sure the value is correct and within the model context "
    "size.",
    "the CPU check passed: Available memory on node 0 (6.06/7.75 GiB), desired CPU memory utilization (0.4, 3.1 GiB)",
    # a README's troubleshooting heading that names the startup error: no elision, no numbers
    '### "Free memory less than desired GPU memory utilization"\n\nLower GPU_MEMORY_UTILIZATION by 0.01.',
    "(Worker pid=19850) INFO 06-13 20:03:57 [cpu_worker.py:235] Auto set (1.48/18.0) GiB for KV cache on node 0, "
    "with 5.4 GiB requested memory for the worker. 3.92 GiB memory was consumed by non-kv usages.",  # healthy CPU
    "(Worker_TP0 pid=552) INFO 10-28 21:14:49 [worker_v1.py:259] Available memory: 21474836480, total memory: "
    "65452113920",                                                               # an NPU with KV room
    "\n".join([STATS.format(s=1, w=0, kv=95.9)] + [V1 + "GET /health 200"] * 45 + [STATS.format(s=21, w=0, kv=96.0)]),
    # a warmup shape that fits, in a person's words
    "The warmup shape [4, 64, 20] results in a maximum sequence length of 84, well within the 4096 the model supports.",
    # Gaudi's bridge reporting a failure of another kind than an allocation
    "RuntimeError: [Rank:0] FATAL ERROR :: MODULE:PT_BRIDGE Exception in Lowering module: synStatus 26 [Generic failure]",
    # the Neuron runtime failing for another reason than device memory (a timeout, not NRT_RESOURCE)
    'ERROR 02-11 14:20:32 engine.py:389] RuntimeError: nrt_execute status=5 message="Timeout"',
    V1 + "Add 3 padding layers, may waste at most 6.25% KV cache memory",      # KV sizing, healthy
    PREEMPT.format(g=1, tail=" total_num_cumulative_preemption=1"),              # one preemption
    # slots at the cap with nothing waiting, or waiting on one line only, or requests waiting
    # below the cap (a burst the scheduler is still admitting): no queue the cap holds
    "\n".join(STATS.format(s=s, w=0, kv=40.0).replace("Running: 18 reqs", "Running: 256 reqs") for s in (1, 2)),
    STATS.format(s=1, w=90, kv=40.0).replace("Running: 18 reqs", "Running: 256 reqs"),
    "\n".join(STATS.format(s=s, w=90, kv=40.0).replace("Running: 18 reqs", "Running: 100 reqs") for s in (1, 2, 3)),
    # a full cache with nothing waiting holds nothing back, alone or before a calm line
    "\n".join([STATS.format(s=1, w=43, kv=99.0), STATS.format(s=2, w=0, kv=99.0)]),
    # a refusal at a limit below the max_model_len the deployment was given: a proxy's or a chat
    # template's cap, which no max_model_len lifts
    "vllm serve Qwen/Qwen3-8B --max-model-len 131072\n" + REJECT.format(s=1).replace("4096", "8192"),
    "non-default args: {'model': 'm', 'max_model_len': 65536}\n(EngineCore pid=7) ERROR 01-02 03:04:05 [core.py:1] "
    "ValueError: The decoder prompt (length 9040) is longer than the maximum model length of 8192.",
    # a prompt exactly as long as the limit: the client cut it to the limit and left no room for an
    # answer (a harness's rolling windows), not a prompt the server's length is short for
    "ValueError: Prompt length of 2048 is longer than the maximum model length of 2048.",
    # Tenstorrent's on-chip L1 (a kernel's SRAM), not the device DRAM a config budgets
    "TT_FATAL: Out of Memory: Not enough space to allocate 1048576 B L1 buffer across 64 banks",
    # the TPU compiler's on-chip scratch memory, not the HBM a config budgets
    "RuntimeError: Bad StatusOr access: RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran out of memory in "
    "memory space vmem. Used 20.44M of 16.00M vmem.",
    # NVML failing where the allocator did not run out (its initialisation, outside the OOM path)
    "RuntimeError: NVML_SUCCESS == DriverAPI::get()->nvmlInit_v2_() failed in the profiler",
    # PyTorch's MPS allocator: vLLM has no MPS platform, so the app that ran out is another stack's
    "RuntimeError: MPS backend out of memory (MPS allocated: 42.28 GiB, other allocations: 720.00 KiB, max allowed: "
    "42.43 GiB). Tried to allocate 384.00 MiB on shared pool.",
    CAPTURE[2],                                                                  # a capture line quoted alone
    "\n".join(CAPTURE + [V1 + "Graph capturing finished in 12 secs, took 0.45 GiB"]),
    "\n".join(CAPTURE + ["(EngineCore_DP0 pid=563) INFO 12-23 23:34:40 [custom_all_reduce.py:211] Registering 4 "
                          "cuda graph addresses"]),                      # all-reduce after capture
    # a log that ends in capture with XLA's memory-space error (a TPU compiler's) was not cut there
    "\n".join(CAPTURE + ["(EngineCore_DP0 pid=563) ERROR 12-23 23:34:30 [core.py:515] ValueError: Ran out of memory "
                          "in memory space vmem while allocating on stack for %name.32 = bf16[16,32,128]"]),
    "ERROR 06-12 08:12:23 worker_base.py:145] Error execut",                   # cut, but no block count
    H + "# GPU blocks: 507, # CPU blocks: 1024\nERROR 06-12 08:12:23 worker_base.py:145] Error executing method "
    "execute_model. This might cause deadlock in distributed execution.",        # the method named: not cut
    W + "    output = self.runnable(*args, **kwargs)",                        # capture's line, nothing after
    "Free memory (22.40 GB) < desired (18.85 GB at 0.8 utilization) is what we check first",  # enough free
    "\n".join(KV_CHECK[:3] + [W + "    return check(spec)"]).format(kv=4.0),   # the frame, no raise
    "\n".join([W + '  File "/srv/app/quota.py", line 9, in request_memory', W + "    raise ValueError("]),  # not vLLM
    # --- fixer A's look-alikes
    "Memory report: 3 processes, 40.00 GiB memory in use in total",              # no process of the OOM's sentence
    "If you see 'Failed to apply for memory', check the free HBM first",         # CANN's words, not its error line
    "OOM check passed: tried 10 MiB, 32 MiB free",                               # the size asked fits
    "disk: the image crashed once, 50 GiB needed, 80 GiB free now",              # the size asked fits
    "To avoid OOM during CUDA graph capture, set --enforce-eager.",              # advice, not an account
    "at that utilization there's little headroom for CUDA-graph capture \u2192 OOM",  # a risk, not an account
    "This PR could OOM while capturing CUDA graphs at 0.95; lowered to 0.9.",     # hedged
    "[ROCm] Fix OOM during CUDA graph capture for TRITON_ATTN",                   # a fix's title
    "With the margin it no longer OOMs during cudagraph capture.",                # told as over
    "| OOM during CUDA graph capture | `GMU` too high for this TP size | Lower `GMU` |",  # a troubleshooting row
    "### OOM during CUDA graph capture\n\nReduce `GPU_MEMORY_UTILIZATION` to `0.90`.",  # a document's heading
    "CUDA out of memory errors are common on small cards",                        # prose about the error
    "CUDA out of memory: what to do first\nlower the utilization",                # a heading, not the error
    H + "model weights take 7.51GiB; non_torch_memory takes 0.39GiB; PyTorch activation peak memory takes 2.53GiB; "
    "the rest of the memory reserved for KV Cache is 3.76GiB.",                   # a profile that measured
    H + "model weights take 0.00GiB; non_torch_memory takes 0.00GiB; PyTorch activation peak memory takes 1.20GiB; "
    "the rest of the memory reserved for KV Cache is 3.76GiB.",                   # activations measured
    # --- fixer B's look-alikes
    "only 30 GiB free vs 20 GiB required at 0.85 util",                           # enough free
    "7.1 GiB free, but this config needs ~21.7 GiB/card",                        # no utilization: any shortage
    "we had 70 GiB free vs 64 GiB needed, so no problem with `gpu_memory_utilization=0.8`",  # enough free
    "INFO [gpu_worker.py:230] Free memory on device (22.8/23.54 GiB) on startup. Desired GPU memory utilization is "
    "(0.9, 21.19 GiB).",                                                         # the healthy start's hint
    "the hint reads `Free memory on device (22.8/23.54 GiB)` on every start",     # no device: the hint's head
    "KV cache: 2.1 GiB needed, 5.3 GiB available",                               # the need fits
    "leaves 5 GiB for KV cache and the 4096 max-model-len needs 2 GiB",          # the need fits
    CONFIG.replace("4096", "32768") + "\nINFO 05-01 10:00:05 gpu_executor.py:72] # GPU blocks: 4096, # CPU blocks: 256",
    CONFIG.replace("4096", "32768") + "\nINFO 05-01 10:00:05 gpu_executor.py:72] # GPU blocks: 4096,\n# CPU blocks: 256",
    CONFIG + "\nINFO 05-01 10:00:05 cpu_executor.py:72] # CPU blocks: 2048",   # a CPU cache that holds the length
    "the available KV cache memory was 12.5 GiB, plenty",                        # a healthy budget retold
    "available_kv_cache_memory = 10",                                            # the same by its variable
    "available KV cache memory was 0 MiB short of the target",                   # not the budget's unit
    "WARNING 01-01 x] User-specified max_model_len (1048576) is greater than the derived max_model_len "
    "(max_position_embeddings=262144 ...). Make sure the value is correct and within the model context size.",  # a warning
]


#: one runtime line in a log that shows nothing else: (log, rule, kind, direction told)
TOLD_ALONE = [
    ("(EngineCore pid=7) ERROR 01-02 03:04:05 [core.py:1] ValueError: The decoder prompt (length 9040) is longer than "
     "the maximum model length of 4096.", "vllm.log.prompt_over_max_model_len", "requests_rejected",
     {"max_model_len": "increase"}),
    (REJECT.format(s=1), "vllm.log.requests_rejected", "requests_rejected", {"max_model_len": "increase"}),
    ("openai.BadRequestError: 'max_tokens' or 'max_completion_tokens' is too large: 4000. This model's maximum "
     "context length is 8192 tokens and your request has 5000 input tokens (4000 > 8192 - 5000).",
     "vllm.log.completion_over_room", "requests_rejected", {"max_model_len": "increase"}),
    # VLLMValidationError (0.12+) counts a prompt only to one past the limit: "at least"
    ("(APIServer pid=7) vllm.exceptions.VLLMValidationError: This model's maximum context length is 32768 tokens. "
     "However, you requested 0 output tokens and your prompt contains at least 32769 input tokens, for a total of at "
     "least 32769 tokens. Please reduce the length of the input prompt or the number of requested output tokens. "
     "(parameter=input_tokens, value=32769)", "vllm.log.requests_rejected", "requests_rejected",
     {"max_model_len": "increase"}),
    ("ValueError: The prompt (total length 25938) is too long to fit into the model (context length 4096). Make sure "
     "that `max_model_len` is no smaller than the number of text tokens plus multimodal tokens.",
     "vllm.log.prompt_over_context_length", "requests_rejected", {"max_model_len": "increase"}),
    (STATS.format(s=1, w=43, kv=99.0), "vllm.log.kv_cache_pressure", "kv_cache_pressure",
     {"max_num_seqs": "decrease", "gpu_memory_utilization": "increase"}),
    (STATS.format(s=1, w=43, kv=100.0), "vllm.log.kv_cache_full", "kv_cache_pressure",
     {"max_num_seqs": "decrease", "gpu_memory_utilization": "increase"}),
    # V0's limit is min(max_model_len, max_num_batched_tokens): one line cannot say which binds
    ("WARNING 01-24 10:02:20 scheduler.py:170] Input prompt (5000 tokens) is too long and exceeds limit of 4096",
     "vllm.log.prompt_over_limit", "requests_rejected", {}),
]


@pytest.mark.parametrize("log, rule, kind, direction", TOLD_ALONE, ids=[c[1] for c in TOLD_ALONE])
def test_one_runtime_line_alone_is_told_unsustained_and_never_tuned(log, rule, kind, direction):
    d = diagnose(log)
    f = d.primary
    assert [x.rule for x in d.findings] == [rule]
    assert (f.kind, f.confidence, f.action, f.fix, f.fix_direction) == (kind, "unsustained", "alert", {}, direction)
    assert "lower confidence, alert only" in f.note
    # beside a failure the log states, it says nothing: the failure is what the log is about
    assert [x.rule for x in diagnose(OOM + "\n" + log).findings] == ["torch.cuda_oom"]


def test_a_frame_hit_gives_way_to_the_error_that_follows():
    log = "\n".join(KV_CHECK).format(kv=4.0) + "\n" + W + ("ValueError: No available memory for the cache blocks. "
                                                           "Try increasing `gpu_memory_utilization` when initializing the engine.")
    d = diagnose(log)
    assert (d.primary.rule, d.primary.confidence) == ("vllm.no_kv_cache_memory", "stated")
    assert [f.rule for f in d.findings if f.rule.startswith("vllm.frame.")] == []


def test_a_raise_that_shows_its_message_is_read_by_it_not_by_its_frame():
    log = "\n".join(KV_CHECK[:3]).format(kv=4.0) + "\n" + W + '    raise ValueError("No available memory for the cache blocks. "'
    d = diagnose(log)
    assert [(f.rule, f.confidence) for f in d.findings] == [("vllm.no_kv_cache_memory", "inferred")]


@pytest.mark.parametrize("log", SILENT)
def test_look_alikes_stay_silent(log):
    assert diagnose(log).findings == []


def test_a_stated_error_after_its_raise_site_is_the_finding():
    log = ("Traceback (most recent call last):\n"
           '  File "/x/vllm/worker/worker.py", line 493, in raise_if_cache_size_invalid\n'
           '    raise ValueError("No available memory for the cache blocks. "\n'
           "ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when "
           "initializing the engine.")
    d = diagnose(log)
    assert [(f.rule, f.confidence) for f in d.findings] == [("vllm.no_kv_cache_memory", "stated")]


@pytest.mark.parametrize("prefix", ["vllm-1  | ", "  | ", "[pod/vllm-7d9f/vllm] ",
                                    "2024-04-27 10:13:05 | ERROR | stderr | ",
                                    "Dec 05 10:00:00 gpu1 vllm[1234]: ", "> ",
                                    "2025-03-10T15:07:20Z vllm-api-1  | "])
def test_collector_prefixes_are_learnt_and_removed(prefix):
    body = [V1 + "Model loading took 15.59 GiB and 12.3 seconds",
            "(EngineCore_DP0 pid=563) ERROR 12-23 23:34:23 [core.py:708] Traceback (most recent call last):",
            '(EngineCore_DP0 pid=563) ERROR 12-23 23:34:23 [core.py:708]   File "/x/vllm/v1/core/kv_cache_utils.py", '
            "line 540, in check_enough_kv_cache_memory",
            "(EngineCore_DP0 pid=563) ERROR 12-23 23:34:23 [core.py:708]     raise ValueError(",
            "(EngineCore_DP0 pid=563) ERROR 12-23 23:34:23 [core.py:708] ValueError: To serve at least one request "
            "with the models's max seq len (32768), (4.0 GiB KV cache is needed, which is larger than the available "
            "KV cache memory (2.1 GiB). Based on the available memory, the estimated maximum model length is 17200."]
    log = "\n".join(prefix + line for line in body)
    assert learn(log)
    assert without_collectors(log) == "\n".join(body)
    f = diagnose(log).primary
    assert (f.kind, f.numbers["estimated_max_model_len"], f.line) == ("max_model_len_exceeds_kv_cache", 17200, 5)


def test_a_plain_log_is_given_back_as_it_was():
    log = "\n".join(CAPTURE).encode()
    assert without_collectors(log) is log


def test_a_queue_at_256_running_is_not_the_caps_when_the_config_allows_more():
    # 256 is vLLM's default cap; a deployment that runs a higher max_num_seqs is not held by it:
    # told, never raised further (the /metrics rule's "only N of M slots in use")
    log = "\n".join(STATS.format(s=s, w=90, kv=40.0).replace("Running: 18 reqs", "Running: 256 reqs") for s in (1, 2))
    f = diagnose(log, current=ServingConfig(max_num_seqs=512)).primary
    assert (f.kind, f.action, f.fix) == ("queue_growth", "alert", {})
    assert "only 256 of 512 sequence slots in use" in f.note
    f = diagnose(log, current=ServingConfig(max_num_seqs=256)).primary
    assert f.action == "tune" and f.fix["max_num_seqs"] > 256


def _at_cap(cap: int, waiting: list[int], kv: float = 10.0) -> list[str]:
    return [STATS.format(s=s, w=w, kv=kv).replace("Running: 18 reqs", f"Running: {cap} reqs")
            for s, w in enumerate(waiting)]


@pytest.mark.parametrize("said", [
    "(APIServer pid=1) INFO 04-02 06:41:52 [utils.py:233] non-default args: {'model': 'Qwen/Qwen3-8B', 'max_num_seqs': 64}",
    "INFO 04-02 06:41:52 api_server.py:1] args: Namespace(host=None, max_model_len=8128, max_num_seqs=64, seed=0)",
    "$ vllm serve Qwen/Qwen3-8B --max-model-len 8128 --max-num-seqs 64",
])
def test_a_queue_held_at_the_cap_the_log_configured_is_read(said):
    # a server started with its own max_num_seqs pins its running count there, which the default
    # cap's literal never selects (blind rounds 34-37: caps of 8 and 64); the cap is read from the
    # log's head and the rule bound to it
    f = diagnose("\n".join([said] + _at_cap(64, [190, 191, 192]))).primary
    assert (f.rule, f.kind, f.numbers["requests_running"]) == ("vllm.log.queue_at_sequence_cap", "queue_growth", 64)
    assert f.fix["max_num_seqs"] > 64
    # held three stats lines in a row: a burst the cap absorbs for one or two, then drains, is the
    # setting at work (corpus look-alike 3551); and a log that configures no cap reads nothing there
    assert diagnose("\n".join([said] + _at_cap(64, [62, 45]))).findings == []
    assert diagnose("\n".join(_at_cap(64, [190, 191, 192]))).findings == []
    # the queue empty, or the cache full, is no queue the cap holds
    assert diagnose("\n".join([said] + _at_cap(64, [0, 0, 0]))).findings == []
    assert diagnose("\n".join([said] + _at_cap(64, [190, 191, 192], kv=97.0))).primary.kind != "queue_growth"


def test_a_rule_set_without_the_queue_rule_binds_nothing():
    from selfheal.handlers.observer.configured import configured_matchers
    rules = [m for m in builtin_ruleset().matchers if m.rule.id != "vllm.log.queue_at_sequence_cap"]
    assert configured_matchers("'max_num_seqs': 64", tuple(rules)) == ()
    assert len(configured_matchers(b"'max_num_seqs': 64, 'max_num_seqs': 256", builtin_ruleset().matchers)) == 1


def test_the_whole_startup_message_is_one_finding_not_its_tail_too():
    log = ("ValueError: Free memory on device cuda:0 (2.8/23.54 GiB) on startup is less than desired GPU memory "
           "utilization (0.9, 21.19 GiB). Decrease GPU memory utilization or reduce GPU memory used by other processes.")
    d = diagnose(log)
    assert [f.rule for f in d.findings] == ["vllm.startup_free_memory"]


READY_NEW = "(APIServer pid=17917) INFO 09-30 16:57:09 [entry.py:139] Starting vLLM server on http://127.0.0.1:8000"
ALLOCATOR = ("[rank0]:[W930 16:56:50.1 CUDACachingAllocator.cpp:1050] memory allocation failed with OOM on device 0 "
             "while trying to allocate {n} bytes (free: 73400320, total: 23661248512)")


@pytest.mark.parametrize("ready", [READY_NEW, "INFO 05-01 10:00:09 api_server.py:1] Starting vLLM API server on "
                                              "http://0.0.0.0:8000", "Starting vLLM API server 0 on http://0.0.0.0:8000"])
def test_a_server_that_comes_up_after_an_error_has_no_failure_now(ready):
    log = "\n".join([OOM, ready])
    d = diagnose(log)
    assert d.primary is None and [f.kind for f in d.findings] == ["cuda_oom_allocation"]


def test_a_launchers_echo_is_not_the_server_coming_up():
    assert diagnose("\n".join([OOM, "Starting vLLM server on port 8000 ..."])).primary is not None


def test_allocator_warnings_of_a_start_that_comes_up_are_no_finding():
    """PyTorch's allocator retries after the warning: where the server then serves, the retries
    succeeded; where the log ends first, or another start follows, the warnings are told."""
    warnings = [ALLOCATOR.format(n=134217728 + i) for i in range(3)]
    assert diagnose("\n".join(warnings + [READY_NEW])).findings == []
    cut = diagnose("\n".join(warnings))
    assert cut.primary.rule == "torch.allocator_oom_warning" and len(cut.findings) == 3
    restarted = diagnose("\n".join(warnings + [V1 + "Initializing a V1 LLM engine (v0.30.0) with config: x"]))
    assert len(restarted.findings) == 3
    # a log that then stops inside CUDA-graph capture died there: the warnings were retried
    died = diagnose("\n".join(warnings[:1] + CAPTURE))
    assert (died.primary.rule, died.primary.confidence) == ("vllm.cut.cudagraph_capture", "truncated")
    assert [f.rule for f in died.findings] == ["vllm.cut.cudagraph_capture", "torch.allocator_oom_warning"]
    # an error after them: the attempt failed, and the error is the finding
    failed = diagnose("\n".join(warnings + [OOM]))
    assert failed.primary.rule == "torch.cuda_oom" and len(failed.findings) == 4


# V1 0.8's accounting for a sliding-window model (Gemma 3) counts every layer's full length, and
# the engine then comes up and serves: its concurrency line stated no failure
SLIDING = ("INFO 07-09 09:19:27 [kv_cache_utils.py:634] GPU KV cache size: 69,920 tokens\n"
           "INFO 07-09 09:19:27 [kv_cache_utils.py:637] Maximum concurrency for 131,072 tokens per request: 0.53x\n")
INITIALISED = "INFO 07-09 09:19:58 [core.py:163] init engine (profile, create kv cache, warmup model) took 66.74 seconds\n"


def test_an_engine_that_came_up_withdraws_what_its_accounting_inferred():
    assert diagnose(SLIDING).primary.rule == "vllm.acct.concurrency_below_one"
    assert diagnose(SLIDING + INITIALISED).findings == []
    # V0 says it too, from llm_engine.py, in another shape of line
    v0 = "INFO 09-12 06:54:11 llm_engine.py:424] init engine (profile, create kv cache, warmup model) took 12.3 s\n"
    assert diagnose(SLIDING + v0).findings == []


def test_an_engine_that_came_up_after_a_stated_failure_is_a_retrys():
    # the error stated the attempt's failure: the engine that came up after it is a retry's, and
    # the accounting of the failed attempt stays with its error
    stated = ("ValueError: To serve at least one request with the models's max seq len (131072), (8.00 GiB KV cache "
              "is needed, which is larger than the available KV cache memory (4.27 GiB).\n")
    d = diagnose(SLIDING + stated + INITIALISED)
    assert d.primary.kind == "max_model_len_exceeds_kv_cache" and d.primary.confidence == "stated"
    assert len(d.findings) == 2


def test_an_engine_that_came_up_after_accounting_that_held_is_a_retrys():
    # an application retried after the failure with no engine restart line between: the retry's
    # own accounting, which holds, tells the attempts apart, and the failed one's inference stays
    retried = ("INFO 07-09 09:29:27 [kv_cache_utils.py:634] GPU KV cache size: 269,920 tokens\n"
               "INFO 07-09 09:29:27 [kv_cache_utils.py:637] Maximum concurrency for 131,072 tokens per request: 2.06x\n")
    d = diagnose(SLIDING + retried + INITIALISED)
    assert d.primary.kind == "max_model_len_exceeds_kv_cache" and d.primary.confidence == "inferred"


def test_accounting_that_could_compare_nothing_held_nothing():
    # the KV cache's size printed again (a second rank's line) where max_model_len is not known (a
    # config line cut by a viewer): its rule compared nothing, so it is no retry's accounting that
    # held, and the engine that came up withdraws the inference before it (round 36's artifacts run)
    again = "INFO 07-09 09:19:27 [kv_cache_utils.py:634] GPU KV cache size: 69,920 tokens\n"
    assert diagnose(SLIDING + again + INITIALISED).findings == []
    # where max_model_len is known and the cache holds it, it held: the inference before it stays
    held = "INFO 07-09 09:19:27 [kv_cache_utils.py:634] GPU KV cache size: 269,920 tokens\n"
    config = "INFO 07-09 09:18:32 [core.py:61] Initializing a V1 LLM engine (v0.8.4) with config: max_seq_len=131072,\n"
    assert diagnose(config + SLIDING + held + INITIALISED).primary.confidence == "inferred"


def test_memory_the_accounting_showed_negative_stays_when_an_engine_came_up():
    # vLLM raises on it: an engine that came up after it is another start's, its lines cut from the paste
    negative = ("INFO 08-02 22:12:16 worker.py:295] the rest of the memory reserved for KV Cache is -7.83GiB.\n"
                "INFO 08-02 22:12:16 executor_base.py:118] Maximum concurrency for 4096 tokens per request: 0.00x\n")
    assert diagnose(negative + INITIALISED).primary.kind == "no_kv_cache_memory"


def test_a_raise_site_states_the_failure_an_engine_that_came_up_does_not_withdraw():
    # the traceback reached vLLM's KV check's raise: it raised, so the engine that came up after
    # it is another start's, its restart line cut from the paste
    raised = "\n".join(KV_CHECK[1:]) + "\n"
    d = diagnose(SLIDING + raised + INITIALISED)
    assert [f.rule for f in d.findings] == ["vllm.acct.concurrency_below_one", "vllm.frame.kv_check_unknown_budget"]
