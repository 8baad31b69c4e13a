"""rules/35_source_checks.toml: vLLM's memory and length checks found by reading its source.

Each message is built the way vLLM builds it: the f-string of the check (copied from the vLLM
wheel named beside it) filled with byte counts through `format_gib` (vLLM's
`str(round(b / 2**30, 2))`), so the text is what a server prints. Expected fixes are worked by
hand for the default bounds (utilization grid 0.60 + k*0.05, max_num_seqs 2 + 2k, max_model_len
1024 + 512k, max_num_batched_tokens 512 + 512k) and a 10% buffer.
"""
from __future__ import annotations

import math
import re
from importlib import resources

import pytest

from selfheal.handlers.observer import diagnose
from selfheal.handlers.observer.rules import parse_rules
from selfheal.schemas.actuators import ActuatorBounds
from selfheal.schemas.serving import ServingConfig

GiB = 1 << 30
RULE_FILE = "35_source_checks.toml"
TEXT = (resources.files("selfheal.handlers.observer.rules") / RULE_FILE).read_text(encoding="utf-8")
OWN = parse_rules(TEXT, RULE_FILE)  # this file alone: what the mutation test breaks


def format_gib(b: float) -> str:
    """vllm/utils/mem_utils.py format_gib."""
    return f"{round(b / GiB, 2)}"


DOCS = "See https://docs.vllm.ai/en/latest/configuration/conserving_memory/ for more details."
NO_KV = "No available memory for the cache blocks."
AUTO_FIT = "Cannot auto-fit max_model_len: not enough GPU memory available to serve even a single token."
DEFAULT_HINT = ("Try increasing `gpu_memory_utilization` when initializing the engine (this flag also controls "
                "CPU memory reservation on the CPU backend, despite its name).")
GRAPHS_HINT = ("CUDA graph capture and warmup left no memory for the KV cache. Increase `gpu_memory_utilization`, "
               "reduce the memory CUDA graphs take (fewer or smaller capture sizes in the compilation config), "
               "or use more GPUs.")
GRAPHS_TAIL = " CUDA graphs take less with fewer or smaller capture sizes in the compilation config."


def extensible_hint(utilization: float, after_warmup: bool = False) -> str:
    """vllm 0.34 v1/core/kv_cache_planning.py _more_kv_cache_memory_hint, extensible KV cache."""
    used_by = "the model, its activations, CUDA graphs and warmup" if after_warmup else "the model and its activations"
    tail = GRAPHS_TAIL if after_warmup else ""
    if utilization < 1.0:
        return (f"The KV cache gets what is left after {used_by} within `gpu_memory_utilization`={utilization}; "
                "increase it (with the extensible KV cache it defaults to 1.0) or decrease `max_model_len` or "
                f"`max_num_seqs`.{tail}")
    return (f"The extensible KV cache already takes all device memory left after {used_by}; decrease "
            f"`max_model_len` or `max_num_seqs`, or the model needs a device with more memory.{tail}")


def cpu_startup(node, free, total, util, v022=True) -> str:
    """vllm 0.20-0.32 v1/worker/cpu_worker.py CPUWorker.__init__."""
    requested = math.ceil(total * util)
    tail = ("On the CPU backend, the `--gpu-memory-utilization` flag controls the fraction of CPU memory reserved "
            "(despite its name). To resolve: decrease `--gpu-memory-utilization` (e.g. `--gpu-memory-utilization "
            "0.5`) or reduce CPU memory used by other processes." if v022 else
            "Decrease --gpu-memory-utilization or reduce CPU memory used by other processes.")
    return (f"ValueError: Available memory on node {node} ({format_gib(free)}/{format_gib(total)} GiB) on startup "
            f"is less than desired CPU memory utilization ({util}, {format_gib(requested)} GiB). {tail}")


def cpu_explicit_kv(node, free, total, kv) -> str:
    """vllm 0.20-0.34 v1/worker/cpu_worker.py determine_available_memory, explicit KV size."""
    return (f"ValueError: Available memory on node {node} ({format_gib(free)}/{format_gib(total)} GiB) on kv cache"
            f" allocation is less than requested memory for kv ({format_gib(kv)} GiB). Decrease "
            "--kv-cache-memory-bytes, VLLM_CPU_KVCACHE_SPACE, or reduce CPU memory used by other processes.")


def cpu_worker_uses(node, consumed, total, util) -> str:
    """vllm 0.33-0.34 v1/worker/cpu_worker.py determine_available_memory, the worker fills its budget."""
    requested = math.ceil(total * util)
    in_use = math.ceil(consumed / total * 100)
    return (f"ValueError: The worker already uses {format_gib(consumed)} GiB (model weights and runtime), more than "
            f"the {format_gib(requested)} GiB of CPU memory reserved for it on node {node}, leaving none for the KV "
            "cache. On the CPU backend, the `--gpu-memory-utilization` flag controls the fraction of CPU memory "
            f"reserved (despite its name). To resolve: increase `--gpu-memory-utilization` to more than "
            f"{in_use / 100:.2f}, or set the KV cache size explicitly with `--kv-cache-memory-bytes` or "
            "VLLM_CPU_KVCACHE_SPACE.")


def external_exceed(device, external, total, util) -> str:
    """vllm 0.32-0.34 v1/worker/utils.py request_memory."""
    requested = math.ceil(total * util)
    return (f"ValueError: Externally held weights on device {device} ({format_gib(external)}/{format_gib(total)} "
            f"GiB) exceed the desired GPU memory utilization ({util}, {format_gib(requested)} GiB). Increase GPU "
            "memory utilization or reduce GPU memory used by other processes.")


def external_engine(device, free, total, util, external) -> str:
    """vllm 0.32-0.34 v1/worker/utils.py request_memory."""
    engine = math.ceil(total * util) - external
    return (f"ValueError: Free memory on device {device} ({format_gib(free)}/{format_gib(total)} GiB) on startup "
            "is less than the engine's budget after excluding external process's weights "
            f"({util}, {format_gib(engine)} GiB). Decrease GPU memory utilization or reduce GPU memory used by "
            "other processes.")


CPU_TOTAL = 9.71 * GiB  # the server
UTIL_08 = ServingConfig(gpu_memory_utilization=0.8)
EAGER = ServingConfig(gpu_memory_utilization=0.8, enforce_eager=True)
SEQS_16 = ServingConfig(max_num_seqs=16)
NO_EAGER = ActuatorBounds(enforce_eager_allowed=False)
INC_UTIL = {"gpu_memory_utilization": "increase"}
DEC_UTIL = {"gpu_memory_utilization": "decrease"}
AUTO_DIR = {"gpu_memory_utilization": "increase", "enforce_eager": "enable"}
FULL_DIR = {"max_num_seqs": "decrease", "enforce_eager": "enable"}
EXT_DIR = {"gpu_memory_utilization": "increase", "max_num_seqs": "decrease"}
SLOTS = {"max_num_batched_tokens": "increase"}

# a V0 worker's traceback cut inside the cache check (vllm/worker/worker.py), its line {n}
V0_CHECK = "\n".join([
    "ERROR 04-28 15:55:45 worker_base.py:157] Traceback (most recent call last):",
    'ERROR 04-28 15:55:45 worker_base.py:157]   File "/venv/lib/python3.10/site-packages/vllm/worker/worker.py", line '
    "171, in initialize_cache", "ERROR 04-28 15:55:45 worker_base.py:157]     raise_if_cache_size_invalid(num_gpu_blocks,",
    'ERROR 04-28 15:55:45 worker_base.py:157]   File "/venv/lib/python3.10/site-packages/vllm/worker/worker.py", line '
    "{n}, in raise_if_cache_size_invalid", "ERROR 04-28 15:55:45 worker_base.py:157]     raise ValueError("])

# (id, text, current, bounds, rule, kind, numbers, direction, fix, words the note must hold)
CASES = [
    # --- CPU startup (the first wording) ---------------------------------------------
    ("cpu startup 0.22-0.32, the issue's server", cpu_startup(0, 8.2 * GiB, CPU_TOTAL, 1.0), None, None,
     "vllm.cpu_startup_free_memory", "startup_free_memory_below_utilization",
     {"free_gib": 8.2, "total_gib": 9.71, "requested_utilization": 1.0, "requested_gib": 9.71},
     DEC_UTIL, {"gpu_memory_utilization": 0.75}, ["8.2 of 9.71 GiB"]),  # 8.2*0.9/9.71 = 0.760 -> 0.75
    ("cpu startup 0.20-0.21", cpu_startup(1, 20.0 * GiB, 31.2 * GiB, 0.9, v022=False), None, None,
     "vllm.cpu_startup_free_memory", "startup_free_memory_below_utilization",
     {"free_gib": 20.0, "total_gib": 31.2, "requested_utilization": 0.9, "requested_gib": 28.08},
     DEC_UTIL, {"gpu_memory_utilization": 0.55}, []),  # 20*0.9/31.2 = 0.577 -> 0.55
    ("cpu startup retold, its middle elided", "Pod crash-looped: `Available memory on node 0 (3.06/7.75 GiB) ... is "
     "less\nthan desired CPU memory utilization (0.4, 3.1 GiB)`.", None, None,
     "vllm.cpu_startup_free_memory_retold", "startup_free_memory_below_utilization",
     {"free_gib": 3.06, "total_gib": 7.75, "requested_utilization": 0.4, "requested_gib": 3.1},
     DEC_UTIL, {"gpu_memory_utilization": 0.35}, ["3.06 of 7.75 GiB"]),  # 3.06*0.9/7.75 = 0.355 -> 0.35
    # --- vLLM 0.2's paged attention: a sequence's logits in shared memory ---------------------
    ("0.2 shared memory per block below max_model_len", "RuntimeError: vLLM cannot currently support "
     "max_model_len=65536 with block_size=16 on GPU with compute capability (8, 9) (required shared memory 264252.0 > "
     "available shared memory 101376). This will be fixed in a future release.", None, None,
     "vllm.shared_memory_max_seq_len", "other_config_error", {"max_model_len": 65536, "shared_memory_bytes": 101376},
     {"max_model_len": "decrease"}, {"max_model_len": 24576}, ["101376 bytes"]),  # 101376/4 - 512 = 24832 -> 24576
    # --- CPU explicit KV size (the second wording): alert naming the flag -------------
    ("cpu explicit kv, the issue's 64 GiB", cpu_explicit_kv(0, 8.2 * GiB, CPU_TOTAL, 64 * GiB), UTIL_08, None,
     "vllm.cpu_explicit_kv_size", "no_kv_cache_memory",
     {"node_free_gib": 8.2, "total_gib": 9.71, "requested_kv_gib": 64.0}, {}, {},
     ["--kv-cache-memory-bytes", "VLLM_CPU_KVCACHE_SPACE", "64 GiB", "at most 7.38 GiB"]),
    # --- CPU worker above its reservation (0.33+) ---------------------------------------------
    ("cpu worker fills its reservation", cpu_worker_uses(0, 2.51 * GiB, 8.34 * GiB, 0.1), None, None,
     "vllm.cpu_worker_over_reservation", "no_kv_cache_memory",
     {"process_gib": 2.51, "budget_gib": 0.83, "least_utilization": 0.31},
     INC_UTIL, {"gpu_memory_utilization": 0.35}, ["above 0.31"]),  # 0.31*1.1 = 0.341 -> 0.35
    ("cpu worker, threshold sentence cut off",
     cpu_worker_uses(0, 2.51 * GiB, 8.34 * GiB, 0.1).split(" On the CPU backend")[0],
     ServingConfig(gpu_memory_utilization=0.1), None, "vllm.cpu_worker_over_reservation", "no_kv_cache_memory",
     {"process_gib": 2.51, "budget_gib": 0.83},
     INC_UTIL, {"gpu_memory_utilization": 0.35}, ["at utilization 0.1"]),  # 2.51*1.1/0.83*0.1 = 0.333 -> 0.35
    ("cpu worker, threshold cut off, config unknown",
     cpu_worker_uses(0, 2.51 * GiB, 8.34 * GiB, 0.1).split(" On the CPU backend")[0], None, None,
     "vllm.cpu_worker_over_reservation", "no_kv_cache_memory", {"process_gib": 2.51, "budget_gib": 0.83},
     INC_UTIL, {}, ["pass the current config"]),
    # --- V0 CPU / OpenVINO: the KV space is an environment variable ---------------------------
    ("v0 cpu no blocks",
     "ValueError: No available memory for the cache blocks. Try increasing `VLLM_CPU_KVCACHE_SPACE` when "
     "initializing the engine.", UTIL_08, None, "vllm.v0_kvcache_space", "no_kv_cache_memory", {}, {}, {},
     ["VLLM_CPU_KVCACHE_SPACE"]),
    ("v0 openvino no blocks",
     "ValueError: No available memory for the cache blocks. Try increasing `VLLM_OPENVINO_KVCACHE_SPACE` when "
     "initializing the engine.", UTIL_08, None, "vllm.v0_kvcache_space", "no_kv_cache_memory", {}, {}, {},
     ["VLLM_OPENVINO_KVCACHE_SPACE"]),
    # --- CPU pooler warm-up OOM (0.34) -------------------------------------------------------
    ("cpu pooler warm-up",
     "RuntimeError: Out of memory while warming up the pooler (task='embed') with 256 dummy requests. "
     "Lower `max_num_seqs`.", None, None, "vllm.cpu_pooler_warmup_oom", "cuda_oom_allocation",
     {"max_num_seqs": 256}, {"max_num_seqs": "decrease"}, {"max_num_seqs": 128}, []),
    # --- GPU weights held outside the process (0.32+) -----------------------------------------
    ("external weights above the budget", external_exceed("cuda:0", 40.5 * GiB, 79.19 * GiB, 0.5), None, None,
     "vllm.external_weights_exceed_budget", "no_kv_cache_memory",
     {"external_weights_gib": 40.5, "total_gib": 79.19, "requested_utilization": 0.5, "requested_gib": 39.6},
     INC_UTIL, {"gpu_memory_utilization": 0.6}, []),  # 40.5*1.1/79.19 = 0.5626 -> 0.60
    ("external weights leave the engine too little free",
     external_engine("cuda:0", 20.0 * GiB, 79.19 * GiB, 0.9, 40.5 * GiB), None, None,
     "vllm.external_weights_engine_budget", "startup_free_memory_below_utilization",
     {"free_gib": 20.0, "total_gib": 79.19, "requested_utilization": 0.9, "engine_budget_gib": 30.77},
     DEC_UTIL, {"gpu_memory_utilization": 0.7}, ["40.50 GiB of external weights"]),  # (18+40.5)/79.19 = 0.739
    # --- auto-fit max_model_len with no memory (0.14+) ----------------------------------------
    ("auto-fit 0.14-0.33", f"ValueError: {AUTO_FIT} Try increasing `gpu_memory_utilization`.", UTIL_08, None,
     "vllm.auto_fit_no_memory", "no_kv_cache_memory", {}, AUTO_DIR, {"gpu_memory_utilization": 0.85},
     ["one step up from 0.8"]),
    ("auto-fit 0.34, no-KV hint", f"ValueError: {AUTO_FIT} {DEFAULT_HINT}", UTIL_08, None,
     "vllm.auto_fit_no_memory", "no_kv_cache_memory", {}, AUTO_DIR, {"gpu_memory_utilization": 0.85}, []),
    ("auto-fit 0.34 after capture: eager", f"ValueError: {AUTO_FIT} {GRAPHS_HINT}", UTIL_08, None,
     "vllm.auto_fit_no_memory", "no_kv_cache_memory", {}, AUTO_DIR, {"enforce_eager": True}, ["eager mode"]),
    ("auto-fit 0.34 after capture, eager already on", f"ValueError: {AUTO_FIT} {GRAPHS_HINT}", EAGER, None,
     "vllm.auto_fit_no_memory", "no_kv_cache_memory", {}, AUTO_DIR, {"gpu_memory_utilization": 0.85}, []),
    ("auto-fit 0.34 after capture, eager not allowed", f"ValueError: {AUTO_FIT} {GRAPHS_HINT}", UTIL_08, NO_EAGER,
     "vllm.auto_fit_no_memory", "no_kv_cache_memory", {}, AUTO_DIR, {"gpu_memory_utilization": 0.85}, []),
    ("auto-fit, deficit from the log's context",
     "INFO [gpu_worker.py:300] Available KV cache memory: -2.0 GiB\n"
     "INFO [gpu_worker.py:310] Memory profiling results: total_gpu_memory=23.54 GiB initial_memory_usage=1.0 GiB "
     "peak_torch_memory=20.0 GiB memory_usage_post_profile=20.0 GiB non_torch_memory=0.5 GiB kv_cache_size=-2.0 "
     "GiB gpu_memory_utilization=0.80\n"
     f"ValueError: {AUTO_FIT} Try increasing `gpu_memory_utilization`.", None, None,
     "vllm.auto_fit_no_memory", "no_kv_cache_memory",
     {"available_kv_gib": -2.0, "total_gib": 23.54, "requested_utilization": 0.8}, AUTO_DIR,
     {"gpu_memory_utilization": 0.9}, ["from the log"]),  # 0.8 + 2*1.1/23.54 = 0.893 -> 0.90
    # --- 0.34 extensible KV cache hints ------------------------------------------------------
    ("extensible no-KV", f"ValueError: {NO_KV} {extensible_hint(0.9)} {DOCS}", None, None,
     "vllm.extensible_no_kv", "no_kv_cache_memory", {"requested_utilization": 0.9}, EXT_DIR,
     {"gpu_memory_utilization": 0.95}, []),
    ("extensible no-KV after warm-up", f"ValueError: {NO_KV} {extensible_hint(0.8, True)} {DOCS}", None, None,
     "vllm.extensible_no_kv", "no_kv_cache_memory", {"requested_utilization": 0.8}, EXT_DIR,
     {"gpu_memory_utilization": 0.85}, ["after CUDA graphs"]),
    ("extensible auto-fit", f"ValueError: {AUTO_FIT} {extensible_hint(0.7)}", None, None,
     "vllm.extensible_no_kv", "no_kv_cache_memory", {"requested_utilization": 0.7}, EXT_DIR,
     {"gpu_memory_utilization": 0.75}, []),
    ("extensible at 1.0: fewer sequences", f"ValueError: {NO_KV} {extensible_hint(1.0)} {DOCS}", SEQS_16, None,
     "vllm.extensible_no_kv_full", "no_kv_cache_memory", {}, FULL_DIR, {"max_num_seqs": 8}, ["16 sequences"]),
    ("extensible at 1.0 after warm-up: eager", f"ValueError: {AUTO_FIT} {extensible_hint(1.0, True)}", SEQS_16,
     None, "vllm.extensible_no_kv_full", "no_kv_cache_memory", {}, FULL_DIR, {"enforce_eager": True}, []),
    ("extensible at 1.0, config unknown", f"ValueError: {NO_KV} {extensible_hint(1.0)} {DOCS}", None, None,
     "vllm.extensible_no_kv_full", "no_kv_cache_memory", {}, FULL_DIR, {}, ["pass the current config"]),
    # --- lengths and batch sizes pinned by another setting -----------------------------------
    ("max_num_active_seqs", "ValueError: max_num_active_seqs (64) cannot be greater than max_num_seqs (16).",
     None, None, "vllm.active_seqs_above_seqs", "other_config_error",
     {"max_num_active_seqs": 64, "max_num_seqs": 16}, {"max_num_seqs": "increase"}, {"max_num_seqs": 64}, []),
    ("long prefill threshold",
     "ValueError: long_prefill_token_threshold (4000) cannot be greater than the max_model_len (2048).",
     None, None, "vllm.long_prefill_threshold_above_model_len", "other_config_error",
     {"long_prefill_token_threshold": 4000, "max_model_len": 2048}, {"max_model_len": "increase"},
     {"max_model_len": 4096}, []),
    ("multimodal item above the batch",
     "ValueError: Chunked MM input disabled but max_tokens_per_mm_item (9000) is larger than "
     "max_num_batched_tokens (8192). Please increase max_num_batched_tokens.", None, None,
     "vllm.mm_item_above_batched_tokens", "other_config_error",
     {"max_tokens_per_mm_item": 9000, "max_num_batched_tokens": 8192}, SLOTS, {"max_num_batched_tokens": 9216}, []),
    ("spec slots 0.17-0.25",
     "ValueError: VllmConfig received max_num_scheduled_tokens but it does not have enough slots to support the "
     "speculative decoding settings. It should be greater by at least 512, but got max_num_batched_tokens=2048 "
     "and max_num_scheduled_tokens=2000.", None, None, "vllm.spec_decode_batch_slots", "other_config_error",
     {"max_num_batched_tokens": 2048, "max_num_scheduled_tokens": 2000, "draft_slots": 512}, SLOTS,
     {"max_num_batched_tokens": 2560}, []),
    ("spec slots 0.28-0.32",
     "ValueError: VllmConfig does not have enough slots to schedule a token and support the speculative decoding "
     "settings. Got max_num_batched_tokens=1024 and scheduled_token_delta=1024.", None, None,
     "vllm.spec_decode_batch_slots", "other_config_error",
     {"max_num_batched_tokens": 1024, "draft_slots": 1024}, SLOTS, {"max_num_batched_tokens": 1536}, []),
    ("spec slots 0.33-0.34",
     "ValueError: VllmConfig does not have enough slots to schedule a token and support the speculative decoding "
     "settings. Got max_num_batched_tokens=4 and num_lookahead_tokens=4.", None, None,
     "vllm.spec_decode_batch_slots", "other_config_error",
     {"max_num_batched_tokens": 4, "num_lookahead_tokens": 4}, SLOTS, {"max_num_batched_tokens": 512}, []),
    ("spec no schedulable tokens (2048 - 9 x 256)",
     "ValueError: max_num_scheduled_tokens is set to -256 based on the speculative decoding settings, which does "
     "not allow any tokens to be scheduled. Increase max_num_batched_tokens to accommodate the additional draft "
     "token slots, or decrease num_speculative_tokens.", ServingConfig(max_num_batched_tokens=2048), None,
     "vllm.spec_decode_no_schedulable_tokens", "other_config_error", {"max_num_scheduled_tokens": -256}, SLOTS,
     {"max_num_batched_tokens": 2560}, ["2304 draft slots"]),
    ("spec no schedulable tokens, quoted short",
     "max_num_scheduled_tokens is set to -1792, which does not allow any tokens to be scheduled",
     ServingConfig(max_num_batched_tokens=2048), None,
     "vllm.spec_decode_no_schedulable_tokens", "other_config_error", {"max_num_scheduled_tokens": -1792}, SLOTS,
     {"max_num_batched_tokens": 4096}, ["3840 draft slots"]),
    ("lora with speculative decoding",
     "ValueError: Consider increasing max_num_batched_tokens or decreasing num_speculative_tokens", None, None,
     "vllm.lora_spec_decode_batch_slots", "other_config_error", {},
     {"max_num_batched_tokens": "increase", "max_num_seqs": "decrease"}, {}, ["LoRA"]),
    ("speculative length above the target's",
     "ValueError: speculative_max_model_len=8192 cannot be larger than target_max_model_len=4096", None, None,
     "vllm.spec_max_model_len_above_target", "other_config_error",
     {"speculative_max_model_len": 8192, "max_model_len": 4096}, {"max_model_len": "increase"},
     {"max_model_len": 8192}, []),
    # --- GPU capability ----------------------------------------------------------------------
    ("bfloat16 on a T4", "ValueError: Bfloat16 is only supported on GPUs with compute capability of at least 8.0. "
     "Your Tesla T4 GPU has compute capability 7.5. You can use float16 instead by explicitly setting the `dtype` "
     "flag in CLI, for example: --dtype=half.", None, None, "vllm.capability.bfloat16", "other_config_error", {}, {},
     {}, ["--dtype=half"]),
    ("quantization above the GPU's capability", "ValueError: The quantization method awq is not supported for the "
     "current GPU. Minimum capability: 75. Current capability: 70.", None, None, "vllm.capability.quantization",
     "other_config_error", {"minimum_capability": 75, "compute_capability": 70}, {}, {}, ["capability 75"]),
    # --- TPU --------------------------------------------------------------------------------
    ("tpu weights above HBM",
     "RuntimeError: Unable to load model, a likely reason is the model is too large for the current device's HBM "
     "memory. Consider switching to a smaller model or sharding the weights on more chips. See the detailed "
     "error: RESOURCE_EXHAUSTED: Error allocating device buffer", None, None, "vllm.tpu_weights_hbm",
     "cuda_oom_allocation", {}, {}, {}, ["HBM"]),
    # --- the V1 KV check quoted from its middle -------------------------------------------------
    ("max seq len error without its head", "\U0001f6ab KV cache is needed, which is larger than the available KV "
     "cache memory.", None, None, "vllm.kv_cache_max_model_len_tail", "max_model_len_exceeds_kv_cache", {},
     {"max_model_len": "decrease", "gpu_memory_utilization": "increase"}, {}, ["quoted without"]),
    ("max seq len error from its second parenthesis", "the error: (2.2 GiB KV cache is needed, which is larger than "
     "the available KV cache memory (1.5 GiB).", ServingConfig(max_model_len=32768), None,
     "vllm.kv_cache_max_model_len_tail", "max_model_len_exceeds_kv_cache",
     {"needed_kv_gib": 2.2, "available_kv_gib": 1.5}, {"max_model_len": "decrease", "gpu_memory_utilization": "increase"},
     {"max_model_len": 19968}, ["current config's 32768"]),
    ("max seq len error, its words shortened", "ValueError: 1.75 GiB KV cache is needed, available 0.13 GiB",
     ServingConfig(max_model_len=8192), None, "vllm.kv_cache_max_model_len_shortened",
     "max_model_len_exceeds_kv_cache", {"needed_kv_gib": 1.75, "available_kv_gib": 0.13},
     {"max_model_len": "decrease", "gpu_memory_utilization": "increase"}, {"max_model_len": 512}, ["0.13 of the 1.75 GiB"]),
    ("max seq len error, its middle elided and the figure before the word",
     'vLLM refused to start ("8.48 GiB KV cache is needed \u2026 7.48 GiB available").', ServingConfig(max_model_len=131072),
     None, "vllm.kv_cache_max_model_len_shortened", "max_model_len_exceeds_kv_cache",
     {"needed_kv_gib": 8.48, "available_kv_gib": 7.48}, {"max_model_len": "decrease", "gpu_memory_utilization": "increase"},
     {"max_model_len": 103936}, ["7.48 of the 8.48 GiB"]),
    # --- platform plugins ---------------------------------------------------------------------
    ("tenstorrent device bound on max_model_len", "ValueError: TT-Llama8B and TT-Llama11B do not support max_model_len "
     "greater than 32768 on N150 (received 65536). Set --max_model_len to 32768 or lower in vLLM.", None, None,
     "vllm.plugin_max_model_len_bound", "other_config_error", {"derived_max_model_len": 32768, "max_model_len": 65536},
     {"max_model_len": "decrease"}, {"max_model_len": 32768}, ["32768 tokens"]),
    # --- raise sites told apart by their line (0.23.0: no-KV at 720; 0.34.0: max seq len at 124)
    ("no-KV raise by its line, 0.23.0", "\n".join([
        '  File "/venv/lib/python3.12/site-packages/vllm/v1/core/kv_cache_utils.py", line 2052, in get_kv_cache_configs',
        "    _check_enough_kv_cache_memory(",
        '  File "/venv/lib/python3.12/site-packages/vllm/v1/core/kv_cache_utils.py", line 720, in '
        "_check_enough_kv_cache_memory", "    raise ValueError("]), UTIL_08, None,
     "vllm.frame.kv_check_no_memory_line", "no_kv_cache_memory", {}, INC_UTIL, {"gpu_memory_utilization": 0.85},
     ["No available memory"]),
    ("max seq len raise by its line, 0.34.0", "\n".join([
        '  File "/venv/lib/python3.12/site-packages/vllm/v1/core/kv_cache_planning.py", line 124, in '
        "_check_enough_kv_cache_memory", "    raise ValueError("]), ServingConfig(max_model_len=32768), None,
     "vllm.frame.kv_check_max_len_line", "max_model_len_exceeds_kv_cache", {},
     {"max_model_len": "decrease", "gpu_memory_utilization": "increase"}, {"max_model_len": 16384}, ["max-seq-len"]),
    ("V0 no-KV raise by its line, 0.4.1", V0_CHECK.format(n=335), UTIL_08, None,
     "vllm.frame.v0_cache_check_no_memory_line", "no_kv_cache_memory", {}, INC_UTIL, {"gpu_memory_utilization": 0.85},
     ["V0's raise of 'No available memory"]),
    ("V0 max seq len raise by its line, 0.7.0", V0_CHECK.format(n=546), ServingConfig(max_model_len=32768), None,
     "vllm.frame.v0_cache_check_max_len_line", "max_model_len_exceeds_kv_cache", {},
     {"max_model_len": "decrease", "gpu_memory_utilization": "increase"}, {"max_model_len": 16384}, ["max-seq-len"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_message_gives_kind_numbers_and_fix(case):
    _, text, current, bounds, rule, kind, numbers, direction, fix, words = case
    d = diagnose(text, current, bounds)
    f = d.primary
    assert f is not None, "no finding"
    assert (f.rule, f.kind) == (rule, kind)
    assert {k: f.numbers[k] for k in numbers if k in f.numbers} == numbers
    assert set(numbers) <= set(f.numbers)
    assert f.fix_direction == direction
    assert f.fix == pytest.approx(fix)
    assert f.action == ("tune" if fix else "alert")
    for word in words:
        assert word in f.note


def test_every_rule_of_the_file_has_a_case():
    assert {r.id for r in OWN.rules} == {c[4] for c in CASES}


def _break(rule_id: str) -> str:
    """The file with every pattern of one rule made unmatchable (its first piece gets a prefix)."""
    start = TEXT.index("patterns = ", TEXT.index(f'id = "{rule_id}"'))
    end = re.compile(r"\n(?=[A-Za-z\[])").search(TEXT, start).start()  # the next key or table
    section = re.sub(r"(\[\s*)('''|')", r"\1\2NEVER IN A LOG ", TEXT[start:end])
    return TEXT[:start] + section + TEXT[end:]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_broken_rule_misses_its_message(case):
    """Each case rests on its rule: with that rule's pattern broken, this file no longer finds it."""
    _, text, current, bounds, rule, *_ = case
    assert OWN.diagnose(text, current, bounds).primary.rule == rule
    broken = parse_rules(_break(rule), "broken.toml").diagnose(text, current, bounds).primary
    assert broken is None or broken.rule != rule


# The same sources, checked against the rules of 10-30 (they already cover these wordings).
COVERED = [
    ("startup 0.34 (resolved utilization)",
     "ValueError: Free memory on device cuda:0 (36.0/79.19 GiB) on startup is less than desired GPU memory "
     "utilization (0.92, 72.86 GiB). Decrease GPU memory utilization or reduce GPU memory used by other processes.",
     "vllm.startup_free_memory"),
    ("no-KV 0.34 default hint", f"ValueError: {NO_KV} {DEFAULT_HINT} {DOCS}", "vllm.no_kv_cache_memory"),
    ("max_model_len 0.34 ('Decreasing ... also reduces')",
     "ValueError: To serve at least one request with the model's max seq len (32768), (4.0 GiB KV cache is needed, "
     "which is larger than the available KV cache memory (1.5 GiB). Based on the available memory, the estimated "
     f"maximum model length is 12288. {DEFAULT_HINT} Decreasing `max_model_len` also reduces what is needed. {DOCS}",
     "vllm.kv_cache_max_model_len"),
    ("max_model_len 0.34 extensible at 1.0",
     "ValueError: To serve at least one request with the model's max seq len (32768), (4.0 GiB KV cache is needed, "
     f"which is larger than the available KV cache memory (1.5 GiB). {extensible_hint(1.0, True)} Decreasing "
     f"`max_model_len` also reduces what is needed. {DOCS}", "vllm.kv_cache_max_model_len"),
    ("gpu pooler warm-up 0.34 (model runner V2)",
     "RuntimeError: CUDA out of memory occurred when warming up pooler (task='embed') with 256 dummy requests. "
     "Please try lowering `max_num_seqs` when initializing the engine.", "vllm.warmup_oom"),
    ("v0 cpu max seq len",
     "ValueError: The model's max seq len (8192) is larger than the maximum number of tokens that can be stored in "
     "KV cache (4096). Try increasing `VLLM_CPU_KVCACHE_SPACE` or decreasing `max_model_len` when initializing the "
     "engine.", "vllm.kv_cache_max_model_len_v0"),
    ("cpu auto KV (two numbers)",
     "ValueError: Available memory on node 0 (3.2/31.2 GiB) on kv cache allocation is less than requested memory "
     "for kv (24.6/28.08 GiB). Reduce CPU memory used by other processes.", "vllm.cpu_kv_allocation_over_free"),
]


@pytest.mark.parametrize("case", COVERED, ids=[c[0] for c in COVERED])
def test_wordings_covered_by_the_earlier_rules(case):
    _, text, rule = case
    assert diagnose(text, UTIL_08).primary.rule == rule


# vLLM's INFO lines beside these checks on healthy starts
HEALTHY = [
    "INFO [cpu_worker.py:247] Auto set (4.5/31.2) GiB for KV cache on node 0, with 28.08 GiB requested memory for "
    "the worker. 3.1 GiB memory was consumed by non-kv usages.",
    "INFO [cpu_worker.py:211] Explicitly set (4.0/31.2) GiB for KV cache on node 0.",
    "INFO [utils.py:776] Weights are held outside this process: of the 71.27 GiB utilization budget, 40.5 GiB is "
    "externally held and 30.77 GiB remains for the engine's own allocations.",
    "an estimate: 2.0 GiB KV cache is needed, available 5.0 GiB",  # the need fits: no failure
    "a plan: 2.0 GiB KV cache is needed ... 5.0 GiB available",  # likewise, elided
    "WARNING [scheduler.py:392] max_num_batched_tokens (8192) exceeds max_num_seqs * max_model_len (4096). This "
    "may lead to unexpected behavior.",
    "WARNING [kv_cache_planning.py:1506] --max-model-len auto reduced max_model_len from 131072 to 20480 (2.5 GiB "
    "available for the KV cache). Requests longer than 20480 tokens will be rejected.",
    "WARNING [vllm.py:2282] max_num_scheduled_tokens is set to 2040 based on the speculative decoding settings. "
    "This may lead to suboptimal performance. Consider increasing max_num_batched_tokens to accommodate the "
    "additional draft token slots, or decrease num_speculative_tokens.",
]


@pytest.mark.parametrize("line", HEALTHY)
def test_healthy_lines_give_nothing(line):
    assert diagnose(line).primary is None


def _kv_frame(path: str, line: int, fn: str = "_check_enough_kv_cache_memory") -> str:
    return "\n".join([f'  File "/venv/lib/python3.12/site-packages/vllm/v1/core/{path}", line {line}, in {fn}',
                      "    raise ValueError("])


@pytest.mark.parametrize("path, line, fn", [
    ("kv_cache_utils.py", 740, "_check_enough_kv_cache_memory"),  # no-KV in 0.24-0.25, max seq len in 0.23
    ("kv_cache_utils.py", 879, "_check_enough_kv_cache_memory"),  # no-KV in 0.30, max seq len in 0.29
    ("kv_cache_utils.py", 342, "check_enough_kv_cache_memory"),   # no-KV in 0.7.2, max seq len in 0.7.1
    ("kv_cache_utils.py", 700, "_check_enough_kv_cache_memory"),  # no release raises there
    ("kv_cache_utils.py", 720, "check_enough_kv_cache_memory"),   # 0.23's no-KV line, but the 0.7-0.13 name
    ("kv_cache_planning.py", 720, "_check_enough_kv_cache_memory"),  # 0.23's line, another file
])
def test_a_line_that_no_release_pins_to_one_raise_is_left_to_the_guess(path, line, fn):
    f = diagnose(_kv_frame(path, line, fn), UTIL_08).primary
    assert f.rule == "vllm.frame.kv_check_unknown_budget"


@pytest.mark.parametrize("line", [560, 483, 537, 9999])  # V0: no-KV in 0.8.5 and max seq len in 0.9.0 (560),
def test_a_v0_line_that_no_release_pins_to_one_raise_is_left_to_the_guess(line):  # 483 likewise, 537 attention-free
    f = diagnose(V0_CHECK.format(n=line), UTIL_08).primary
    assert f.rule == "vllm.frame.v0_cache_check_unknown_budget"


def test_a_v0_block_count_outranks_the_line():
    f = diagnose("INFO 04-28 15:55:40 llm_engine.py:300] # GPU blocks: 0, # CPU blocks: 512\n" + V0_CHECK.format(n=340),
                 UTIL_08).primary
    assert (f.rule, f.kind) == ("vllm.acct.no_gpu_blocks", "no_kv_cache_memory")


def test_a_budget_printed_before_the_frame_outranks_its_line():
    """A KV budget vLLM printed says which raise it was, whatever release the line is from."""
    budget = "INFO 06-09 14:01:50 [gpu_worker.py:298] Available KV cache memory: 4.0 GiB\n"
    f = diagnose(budget + _kv_frame("kv_cache_utils.py", 720), UTIL_08).primary
    assert (f.rule, f.kind) == ("vllm.frame.kv_check_max_len", "max_model_len_exceeds_kv_cache")
