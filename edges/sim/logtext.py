"""vLLM's own words, as one version prints them: the 0.22.0–0.32.x wording of error_formats.md.

Everything the observer might match is built here from the format strings quoted in
vllm/error_formats.md (and, for healthy INFO lines, from real 0.23 server logs), so that a
simulated canary reads like a real one. Lines carry vLLM's prefix, `(EngineCore pid=4242)
INFO 11-24 06:55:12 [gpu_worker.py:515] ...`, with a fixed fake date, fixed pids and fixed
source line numbers: the same run always prints the same bytes.
"""
from __future__ import annotations

from datetime import datetime, timedelta

VLLM_VERSION = "0.23.1"
#: the simulated clock starts here; only simulated seconds are ever added to it
BASE_TIME = datetime(2025, 11, 24, 6, 55, 0)
API_PID = 4100
ENGINE_PID = 4242
WORKER_PID0 = 4310
PORT = 18080
SITE = "/usr/local/lib/python3.12/dist-packages"
DOCS = "https://docs.vllm.ai/en/latest/configuration/conserving_memory/"
PYDANTIC_DOCS = "https://errors.pydantic.dev/2.12/v"

API = f"APIServer pid={API_PID}"
ENGINE = f"EngineCore pid={ENGINE_PID}"


def worker(rank: int) -> str:
    return f"Worker_TP{rank} pid={WORKER_PID0 + rank}"


def format_gib(b: int) -> str:
    """vLLM's `format_gib`: round(b / 2**30, 2) printed with str() (error_formats.md)."""
    return str(round(b / 2**30, 2))


def format_size(b: int) -> str:
    """PyTorch's allocator `format_size` (c10/cuda/CUDACachingAllocator.cpp): 2 decimals, `<=` bounds."""
    if b <= 1024:
        return f"{b} bytes"
    if b <= 1048576:
        return f"{b / 1024.0:.2f} KiB"
    if b <= 1073741824:
        return f"{b / 1048576.0:.2f} MiB"
    return f"{b / 1073741824.0:.2f} GiB"


class Log:
    """Accumulates prefixed lines on a simulated clock (seconds since BASE_TIME)."""

    #: whether lines are kept; a caller may skip building text that a log would not keep
    renders = True

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.t = 0.0

    def advance(self, seconds: float) -> None:
        self.t += seconds

    def stamp(self) -> str:
        return (BASE_TIME + timedelta(seconds=int(self.t))).strftime("%m-%d %H:%M:%S")

    def log(self, proc: str, level: str, where: str, message: str) -> list[str]:
        """A logger record; vLLM's formatter repeats the header on every line of a multi-line message."""
        head = f"({proc}) {level} {self.stamp()} [{where}]"
        new = [f"{head} {part}" if part else f"{head} " for part in message.split("\n")]
        self.lines.extend(new)
        return new

    def info(self, proc: str, where: str, message: str) -> list[str]:
        return self.log(proc, "INFO", where, message)

    def warning(self, proc: str, where: str, message: str) -> list[str]:
        return self.log(proc, "WARNING", where, message)

    def raw(self, proc: str, text: str) -> list[str]:
        """stderr of a child process (tracebacks, uvicorn): only the process prefix."""
        new = [f"({proc}) {part}" for part in text.split("\n")]
        self.lines.extend(new)
        return new

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


class QuietLog(Log):
    """The same clock, no lines: for a prediction, which needs vLLM's numbers, not its words."""

    renders = False

    def log(self, proc: str, level: str, where: str, message: str) -> list[str]:
        return []

    def raw(self, proc: str, text: str) -> list[str]:
        return []

    def text(self) -> str:
        return ""


# --- error messages (error_formats.md, 0.22.0–0.32.x column) -------------------------------------

def free_memory_below_utilization(device: str, free: int, total: int, util: float, requested: int) -> str:
    """§1, 0.14.0+ (`request_memory`)."""
    return (f"Free memory on device {device} ({format_gib(free)}/{format_gib(total)} GiB) on startup is less "
            f"than desired GPU memory utilization ({util}, {format_gib(requested)} GiB). Decrease GPU memory "
            f"utilization or reduce GPU memory used by other processes.")


def no_kv_cache_memory() -> str:
    """§2, 0.22.0+ wording."""
    return ("No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when "
            "initializing the engine (this flag also controls CPU memory reservation on the CPU backend, "
            f"despite its name). See {DOCS} for more details.")


def max_model_len_exceeds_kv(max_model_len: int, needed: int, available: int, estimated: int) -> str:
    """§3, 0.22.0–0.33.0 ("model's", format_gib numbers, estimate only when > 0)."""
    estimated_msg = (f"Based on the available memory, the estimated maximum model length is {estimated}. "
                     if estimated > 0 else "")
    return (f"To serve at least one request with the model's max seq len ({max_model_len}), "
            f"({format_gib(needed)} GiB KV cache is needed, which is larger than the available KV cache "
            f"memory ({format_gib(available)} GiB). {estimated_msg}Try increasing `gpu_memory_utilization` "
            f"(which also controls CPU memory on the CPU backend) or decreasing `max_model_len` when "
            f"initializing the engine. See {DOCS} for more details.")


def sampler_warmup_oom(num_reqs: int) -> str:
    """§5 `_dummy_sampler_run` wrapper."""
    return (f"CUDA out of memory occurred when warming up sampler with {num_reqs} dummy requests. Please try "
            f"lowering `max_num_seqs` or `gpu_memory_utilization` when initializing the engine.")


def load_model_oom(original: str) -> str:
    """§5 weight-loading wrapper, logged as ERROR before the original is re-raised."""
    return ("Failed to load model - not enough GPU memory. Try lowering --gpu-memory-utilization to free "
            "memory for weights, increasing --tensor-parallel-size, or using --quantization. See "
            f"https://docs.vllm.ai/en/latest/configuration/conserving_memory/ for more tips. (original error: "
            f"{original})")


def torch_oom(*, tried: int, gpu: int, total: int, free: int, processes: list[tuple[int, int]], self_pid: int,
              self_bytes: int, allocated: int, private_pool: int = 0, reserved_unallocated: int = 0) -> str:
    """PyTorch >= 2.2 allocator message (§5); one `Process ...` clause per process on the GPU, by pid."""
    proc_info = ""
    for pid, used in sorted(processes + [(self_pid, -1)]):
        if pid == self_pid:
            proc_info += f"Including non-PyTorch memory, this process has {format_size(self_bytes)} memory in use. "
        else:
            proc_info += f"Process {pid} has {format_size(used)} memory in use. "
    pools = f"with {format_size(private_pool)} allocated in private pools (e.g., CUDA Graphs), " if private_pool else ""
    return (f"CUDA out of memory. Tried to allocate {format_size(tried)}. GPU {gpu} has a total capacity of "
            f"{format_size(total)} of which {format_size(free)} is free. {proc_info}Of the allocated memory "
            f"{format_size(allocated)} is allocated by PyTorch, {pools}and {format_size(reserved_unallocated)} "
            f"is reserved by PyTorch but unallocated. If reserved but unallocated memory is large try setting "
            f"PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See documentation for "
            f"Memory Management  (https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)")


def max_model_len_above_derived(max_model_len: int, derived: int) -> str:
    """§7, 0.11+ (derived printed as a float in 0.2x logs: `max_position_embeddings=32768.0`)."""
    return (f"User-specified max_model_len ({max_model_len}) is greater than the derived max_model_len "
            f"(max_position_embeddings={float(derived)} or model_max_length=None in model's config.json). "
            "To allow overriding this maximum, set the env var VLLM_ALLOW_LONG_MAX_MODEL_LEN=1. "
            "VLLM_ALLOW_LONG_MAX_MODEL_LEN must be used with extreme caution. If the model uses relative "
            "position encoding (RoPE), positions exceeding derived_max_model_len lead to nan. If the model "
            "uses absolute position encoding, positions exceeding derived_max_model_len will cause a CUDA "
            "array out-of-bounds error.")


def batched_tokens_below_model_len(mnbt: int, max_model_len: int) -> str:
    """§4."""
    return (f"max_num_batched_tokens ({mnbt}) is smaller than max_model_len ({max_model_len}). This effectively "
            "limits the maximum sequence length to max_num_batched_tokens and makes vLLM reject longer "
            "sequences. Please increase max_num_batched_tokens or decrease max_model_len.")


def batched_tokens_below_seqs(mnbt: int, seqs: int) -> str:
    """§4 sibling check."""
    return f"max_num_batched_tokens ({mnbt}) must be greater than or equal to max_num_seqs ({seqs})."


def pydantic_error(model: str, *, field: str | None, message: str, error_type: str, input_value: str,
                   input_type: str) -> str:
    """pydantic-core's ValidationError rendering (vLLM configs are pydantic dataclasses)."""
    lines = [f"pydantic_core._pydantic_core.ValidationError: 1 validation error for {model}"]
    if field:
        lines.append(field)
    lines.append(f"  {message} [type={error_type}, input_value={input_value}, input_type={input_type}]")
    lines.append(f"    For further information visit {PYDANTIC_DOCS}/{error_type}")
    return "\n".join(lines)


def args_kwargs(fields: dict[str, object]) -> str:
    """pydantic's truncated repr of a dataclass's ArgsKwargs input (first 25 + '...' + last 24 chars)."""
    text = f"ArgsKwargs((), {fields!r})"
    return text if len(text) <= 50 else f"{text[:25]}...{text[-24:]}"


def bf16_unsupported(gpu_name: str, capability: str) -> str:
    """worker init_device (_check_if_gpu_supports_dtype; platforms/cuda.py check_if_supports_dtype
    in V1), vLLM's wording, its missing space included."""
    return ("Bfloat16 is only supported on GPUs with compute capability of at least 8.0. "
            f"Your {gpu_name} GPU has compute capability {capability}. You can use float16 instead by explicitly "
            "setting the`dtype` flag in CLI, for example: --dtype=half.")


def quantization_unsupported(method: str, minimum: int, capability: int) -> str:
    """VllmConfig's check of the quantization against the GPU (config/vllm.py), vLLM's wording."""
    return (f"The quantization method {method} is not supported for the current GPU. Minimum capability: "
            f"{minimum}. Current capability: {capability}.")


def kv_cache_memory_reserved(size: int) -> str:
    """gpu_worker.py when kv_cache_memory_bytes is set: the profile's budget is skipped [recalled
    wording of PR #21489's log line]."""
    return (f"Reserved {format_gib(size)} GiB for KV cache as specified by kv_cache_memory_bytes config and skipped "
            "memory profiling. This does not respect the gpu_memory_utilization config. Only use "
            "kv_cache_memory_bytes config when you want manual control of KV cache memory size. If OOM'ed, check "
            "the difference of initial free memory between the current run and the previous run where "
            "kv_cache_memory_bytes is suggested and update it correspondingly.")


def config_error(check: str, *, model: str, derived: int, util: float, mnbt: int, seqs: int, mml: int,
                 chunked: bool, quant: str = "", quant_min: int = 0, capability: int = 0) -> tuple[str, str, str]:
    """F0 as the API server raises it: (config class, the engine-args call, pydantic's text)."""
    sched = args_kwargs({"runner_type": "generate", "max_num_batched_tokens": mnbt, "max_num_seqs": seqs,
                         "max_model_len": mml, "enable_chunked_prefill": chunked})
    field, value, vtype, typ = None, sched, "ArgsKwargs", "value_error"
    if check == "max_model_len_above_derived":
        cls, call = "ModelConfig", "model_config = self.create_model_config()"
        msg = "Value error, " + max_model_len_above_derived(mml, derived)
        value = args_kwargs({"model": model, "max_model_len": mml, "renderer_num_workers": 1})
    elif check == "quantization_capability":
        cls, call = "VllmConfig", "config = VllmConfig("
        msg = "Value error, " + quantization_unsupported(quant, quant_min, capability)
        value = args_kwargs({"model_config": model, "quantization": quant})
    elif check in ("util_above_1", "util_not_positive"):
        cls, call, field, value, vtype = "CacheConfig", "cache_config = CacheConfig(", "gpu_memory_utilization", \
            repr(util), "float"
        typ = "less_than_equal" if check == "util_above_1" else "greater_than"
        msg = "Input should be less than or equal to 1" if check == "util_above_1" else "Input should be greater than 0"
    else:
        cls, call = "SchedulerConfig", "scheduler_config = SchedulerConfig("
        msg = "Value error, " + (batched_tokens_below_model_len(mnbt, mml) if check == "batched_below_model_len"
                                 else batched_tokens_below_seqs(mnbt, seqs))
    return cls, call, pydantic_error(cls, field=field, message=msg, error_type=typ, input_value=value,
                                     input_type=vtype)


# --- healthy lines --------------------------------------------------------------------------------

def cudagraph_advisory(util: float, estimate: int, total: int) -> str:
    """gpu_worker.py, estimator on (0.21+): an advisory, not a failure (error_formats.md §6)."""
    delta = estimate / total
    return (f"CUDA graph memory profiling is enabled (default since v0.21.0). The current "
            f"--gpu-memory-utilization={util:.4f} is equivalent to --gpu-memory-utilization="
            f"{round(util - delta, 4):.4f} without CUDA graph memory profiling. To maintain the same effective "
            f"KV cache size as before, increase --gpu-memory-utilization to {min(round(util + delta, 4), 1.0):.4f}. "
            "To disable, set VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=0.")


def cudagraph_disabled_warning(util: float, estimate: int, total: int) -> str:
    """gpu_worker.py WARNING with VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=0 [log, 0.2x]."""
    return ("CUDA graph memory profiling is disabled (VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=0). Without it, "
            "CUDA graph memory is not accounted for during KV cache allocation, which may require lowering "
            "--gpu-memory-utilization to avoid OOM. Consider re-enabling it (the default as of v0.21.0) and "
            f"increasing --gpu-memory-utilization from {util:.4f} to "
            f"{min(round(util + estimate / total, 4), 1.0):.4f}.")


def engine_config(model: str, *, max_model_len: int, tp: int, quantization: str | None, eager: bool, chunked: bool,
                  capture_sizes: list[int], dtype: str = "bfloat16", kv_cache_dtype: str = "auto") -> str:
    """core.py's "Initializing a V1 LLM engine" line, with the fields that matter here."""
    compilation = ("{'mode': <CompilationMode.NONE: 0>, 'cudagraph_mode': <CUDAGraphMode.NONE: 0>}" if eager else
                   "{'mode': <CompilationMode.VLLM_COMPILE: 3>, 'cudagraph_mode': <CUDAGraphMode.FULL_AND_PIECEWISE: "
                   f"(2, 1)>, 'cudagraph_capture_sizes': {capture_sizes[::-1]}, "
                   f"'max_cudagraph_capture_size': {max(capture_sizes)}}}")
    return (f"Initializing a V1 LLM engine (v{VLLM_VERSION}) with config: model='{model}', speculative_config=None, "
            f"tokenizer='{model}', skip_tokenizer_init=False, tokenizer_mode=auto, revision=None, "
            f"tokenizer_revision=None, trust_remote_code=False, dtype=torch.{dtype}, max_seq_len={max_model_len}, "
            f"download_dir=None, load_format=auto, tensor_parallel_size={tp}, pipeline_parallel_size=1, "
            f"data_parallel_size=1, disable_custom_all_reduce=False, quantization={quantization}, "
            f"enforce_eager={eager}, kv_cache_dtype={kv_cache_dtype}, device_config=cuda, seed=0, served_model_name={model}, "
            f"enable_prefix_caching=True, enable_chunked_prefill={chunked}, pooler_config=None, "
            f"compilation_config={compilation}")


def stats_line(prompt_tps: float, gen_tps: float, running: int, waiting: int, kv_usage: float) -> str:
    """V1 `loggers.py` periodic stats."""
    return (f"Engine 000: Avg prompt throughput: {prompt_tps:.1f} tokens/s, Avg generation throughput: "
            f"{gen_tps:.1f} tokens/s, Running: {running} reqs, Waiting: {waiting} reqs, GPU KV cache usage: "
            f"{kv_usage * 100:.1f}%, Prefix cache hit rate: 0.0%")


BANNER = (
    "\n"
    "       █     █     █▄   ▄█\n"
    " ▄▄ ▄█ █     █     █ ▀▄▀ █  version {version}\n"
    "  █▄█▀ █     █     █     █  model   {model}\n"
    "   ▀▀  ▀▀▀▀▀ ▀▀▀▀▀ ▀     ▀\n"
)


# --- tracebacks -----------------------------------------------------------------------------------

Frame = tuple[str, int, str, str]   # (path under site-packages, line, function, source line)


def traceback(frames: list[Frame], exception: str) -> str:
    out = ["Traceback (most recent call last):"]
    for path, line, func, code in frames:
        full = path if path.startswith("/") else f"{SITE}/{path}"
        out.append(f'  File "{full}", line {line}, in {func}')
        if code:
            out.append(f"    {code}")
    out.append(exception)
    return "\n".join(out)


CAUSE = "\n\nThe above exception was the direct cause of the following exception:\n\n"

ENGINE_ENTRY: list[Frame] = [
    ("vllm/v1/engine/core.py", 1090, "run_engine_core",
     "engine_core = EngineCoreProc(*args, engine_index=dp_rank, **kwargs)"),
    ("vllm/v1/engine/core.py", 834, "__init__", "super().__init__("),
]
EXECUTOR_INIT: list[Frame] = [
    ("vllm/v1/engine/core.py", 112, "__init__", "self.model_executor = executor_class(vllm_config)"),
    ("vllm/v1/executor/abstract.py", 103, "__init__", "self._init_executor()"),
]
KV_CACHES: list[Frame] = [
    ("vllm/v1/engine/core.py", 120, "__init__",
     "num_gpu_blocks, num_cpu_blocks, kv_cache_config = self._initialize_kv_caches("),
]
INIT_DEVICE: list[Frame] = [
    ("vllm/v1/worker/worker_base.py", 326, "init_device", "self.worker.init_device()  # type: ignore"),
    ("vllm/v1/worker/gpu_worker.py", 389, "init_device",
     "self.requested_memory = request_memory(init_snapshot, self.cache_config)"),
    ("vllm/v1/worker/utils.py", 435, "request_memory", "raise ValueError("),
]
#: init_device's dtype check, before the memory snapshot (V1 gpu_worker.py, platforms/cuda.py)
DTYPE_CHECK: list[Frame] = [
    ("vllm/v1/worker/gpu_worker.py", 214, "init_device", "current_platform.check_if_supports_dtype(self.model_config.dtype)"),
    ("vllm/platforms/cuda.py", 584, "check_if_supports_dtype", "raise ValueError("),
]
LOAD_MODEL: list[Frame] = [
    ("vllm/v1/worker/gpu_worker.py", 412, "load_model", "self.model_runner.load_model(eep_scale_up=eep_scale_up)"),
    ("vllm/v1/worker/gpu_model_runner.py", 5201, "load_model", "self.model = model_loader.load_model("),
    ("vllm/model_executor/model_loader/base_loader.py", 50, "load_model",
     "model = initialize_model(vllm_config=vllm_config, model_config=model_config, prefix=prefix)"),
    ("vllm/model_executor/model_loader/utils.py", 55, "initialize_model",
     "return model_class(vllm_config=vllm_config, prefix=prefix)"),
    ("vllm/model_executor/layers/linear.py", 463, "create_weights", "weight = Parameter("),
    ("torch/utils/_device.py", 104, "__torch_function__", "return func(*args, **kwargs)"),
]
KV_CHECK: list[Frame] = [
    ("vllm/v1/engine/core.py", 263, "_initialize_kv_caches", "kv_cache_configs = get_kv_cache_configs("),
    ("vllm/v1/core/kv_cache_utils.py", 1572, "get_kv_cache_configs", "_check_enough_kv_cache_memory("),
    ("vllm/v1/core/kv_cache_utils.py", 623, "_check_enough_kv_cache_memory", "raise ValueError("),
]
PROFILE: list[Frame] = [
    ("vllm/v1/engine/core.py", 248, "_initialize_kv_caches",
     "available_gpu_memory = self.model_executor.determine_available_memory()"),
    ("vllm/v1/worker/gpu_worker.py", 470, "determine_available_memory", "self.model_runner.profile_run()"),
]
PROFILE_FORWARD: list[Frame] = [
    ("vllm/v1/worker/gpu_model_runner.py", 6140, "profile_run", "hidden_states, last_hidden_states = self._dummy_run("),
    ("vllm/model_executor/layers/activation.py", 148, "forward_cuda",
     "out = torch.empty(output_shape, dtype=x.dtype, device=x.device)"),
]
PROFILE_SAMPLER: list[Frame] = [
    ("vllm/v1/worker/gpu_model_runner.py", 6151, "profile_run", "output = self._dummy_sampler_run(last_hidden_states)"),
    ("vllm/v1/worker/gpu_model_runner.py", 5921, "_dummy_sampler_run",
     "sampler_output = self.sampler(logits=logits, sampling_metadata=dummy_metadata)"),
]
SAMPLER_RAISE: list[Frame] = [
    ("vllm/v1/worker/gpu_model_runner.py", 5927, "_dummy_sampler_run", "raise RuntimeError("),
]
CAPTURE: list[Frame] = [
    ("vllm/v1/engine/core.py", 277, "_initialize_kv_caches",
     "self.model_executor.initialize_from_config(kv_cache_configs)"),
    ("vllm/v1/worker/gpu_worker.py", 690, "compile_or_warm_up_model",
     "cuda_graph_memory_bytes = self.model_runner.capture_model()"),
    ("vllm/v1/worker/gpu_model_runner.py", 6630, "capture_model", "self._capture_cudagraphs("),
    ("vllm/v1/worker/gpu_model_runner.py", 6702, "_capture_cudagraphs", "self._dummy_run("),
    ("vllm/compilation/cuda_graph.py", 221, "__call__", "output = self.runnable(*args, **kwargs)"),
]
API_ENTRY: list[Frame] = [
    ("/usr/local/bin/vllm", 10, "<module>", "sys.exit(main())"),
    ("vllm/entrypoints/cli/main.py", 75, "main", "args.dispatch_function(args)"),
    ("vllm/entrypoints/cli/serve.py", 112, "cmd", "uvloop.run(run_server(args))"),
    ("vllm/entrypoints/openai/api_server.py", 527, "run_server",
     "await run_server_worker(listen_address, sock, args, **uvicorn_kwargs)"),
    ("vllm/entrypoints/openai/api_server.py", 97, "build_async_engine_client",
     "async with build_async_engine_client_from_engine_args("),
]
API_CONFIG: list[Frame] = API_ENTRY + [
    ("vllm/entrypoints/openai/api_server.py", 131, "build_async_engine_client_from_engine_args",
     "vllm_config = engine_args.create_engine_config(usage_context=usage_context)"),
]
API_ENGINE_FAILED: list[Frame] = API_ENTRY + [
    ("vllm/v1/engine/async_llm.py", 154, "__init__", "self.engine_core = EngineCoreClient.make_async_mp_client("),
    ("vllm/v1/engine/utils.py", 951, "launch_core_engines", "wait_for_engine_startup("),
    ("vllm/v1/engine/utils.py", 1010, "wait_for_engine_startup", "raise RuntimeError("),
]
ENGINE_INIT_FAILED = "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}"
WORKER_INIT_FAILED = ("Exception: WorkerProc initialization failed due to an exception in a background process. "
                      "See stack trace for root cause.")


def worker_rpc_failed(error: str) -> str:
    """multiproc_executor.py: what the engine core raises when a worker's RPC fails."""
    return f"RuntimeError: Worker failed with error '{error}', please check the stack trace above for the root cause"


def metrics_text(model: str, *, preemptions: int, prompt_tokens: int, generation_tokens: int, completed: int,
                 running: float = 0, waiting: float = 0, kv_usage: float = 0.0, refused: int = 0,
                 routes: tuple[str, ...] = ("/v1/completions",)) -> str:
    """A /metrics scrape (Prometheus text; V1 metric names). The HTTP counters are those of
    prometheus-fastapi-instrumentator, which vLLM's API server mounts beside its own, with
    status codes grouped ("2xx", "4xx") as vLLM leaves them; the workload's requests go to the
    first route, refusals (HTTP 400) included."""
    labels = f'engine="0",model_name="{model}"'
    rows = [("vllm:num_requests_running", "gauge", running), ("vllm:num_requests_waiting", "gauge", waiting),
            ("vllm:kv_cache_usage_perc", "gauge", kv_usage), ("vllm:num_preemptions_total", "counter", preemptions),
            ("vllm:prompt_tokens_total", "counter", prompt_tokens),
            ("vllm:generation_tokens_total", "counter", generation_tokens)]
    out = []
    for name, kind, value in rows:
        out += [f"# TYPE {name} {kind}", f"{name}{{{labels}}} {float(value)}"]
    out += ["# TYPE vllm:request_success_total counter",
            f'vllm:request_success_total{{engine="0",finished_reason="length",model_name="{model}"}} '
            f"{float(completed)}",
            "# TYPE http_requests_total counter"]
    for status, count in (("2xx", completed), ("4xx", refused)):
        if count or status == "2xx":
            out.append(f'http_requests_total{{handler="{routes[0]}",method="POST",status="{status}"}} {float(count)}')
    return "\n".join(out) + "\n"
