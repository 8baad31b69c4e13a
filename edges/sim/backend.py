"""The `sim` canary backend: `simulate(scenario, config) -> SimResult`.

Startup follows handlers/models/memory.py (memory_model.md §1, §5), the load phase
handlers/models/serving.py (§4), and every line of output is vLLM's own wording from
logtext.py. Nothing reads a clock or a random generator: the same scenario and config give
the same SimResult, byte for byte.

Failure kinds (`failure_kind`) and the stage they belong to:
  config   F0  other_config_error, batched_tokens_below_model_len (a quantization the GPU's
                                         compute capability refuses is one: VllmConfig's check)
  startup  F0  other_config_error       (bfloat16 on a GPU below compute capability 8.0: init_device)
  startup  F1  startup_free_memory_below_utilization
           F2  cuda_oom_allocation      (weights do not fit)
           F3  cuda_oom_allocation      (profile forward, or sampler warm-up)
           F4  no_kv_cache_memory
           F5  max_model_len_exceeds_kv_cache
           F6  cuda_graph_oom           (capture needs memory outside the budget)
  load     F7  preemption_storm         (preemptions > workload.max_preemption_ratio × requests,
                                         or one request cannot fit the KV cache at all)
           F8  cotenant_oom             (a co-tenant grows past what vLLM left on its GPU)
           --  requests_rejected        (a workload request is longer than max_model_len: HTTP 400)
           F7  kv_cache_pressure / preemption_storm / requests_rejected / queue_growth
                                        (production's /metrics watcher, at its default thresholds,
                                         would report the symptom: edges/sim/metrics.py)

A load phase that passes the scheduler's own checks is then judged as production is: its
/metrics, repeated for as long as the watcher needs, go through MetricsWatch; a symptom it
reports fails the canary (`metrics_symptoms` holds the lines, which edges/sim_backend.py adds to
the canary's output as its harness's), so that a candidate is never promoted with the symptom
that production was healed of.
"""
from __future__ import annotations

import msgspec

from selfheal.edges.sim import logtext as lt
from selfheal.edges.sim import metrics as sim_metrics
from selfheal.edges.sim.loadlog import load_log
from selfheal.edges.sim.logtext import API, ENGINE, Log, QuietLog
from selfheal.edges.sim.scenario import load_scenario
from selfheal.handlers.models.memory import (
    CUDA_CTX, FULL_GRAPH_CAP, GIB, QUANT_MIN_CAPABILITY, Startup, account, capture_sizes,
)
from selfheal.handlers.models.serving import Load, LoadMemo, run_load
from selfheal.schemas.failures import FailureKind
from selfheal.schemas.scenario import Scenario
from selfheal.schemas.serving import ServingConfig

# simulated startup durations, seconds [est; real 0.23 logs: weights ~5 s, compile 20-30 s, capture ~7 s]
_API_TO_ENGINE_S = 6.0
_DIST_INIT_S = 1.0
_PROFILE_S = 1.5
_API_READY_S = 1.5


def _load_s(weights_gib: float) -> float:
    return round(0.8 + 0.3 * weights_gib, 2)


def _compile_s(layers: int) -> float:
    return round(8.0 + 0.5 * layers, 2)


class SimResult(msgspec.Struct, frozen=True, kw_only=True):
    """One simulated canary. `simulated` is always True: such results never reach a baseline."""
    simulated: bool = True
    scenario: str
    config: ServingConfig
    started: bool
    passed_load: bool
    failure_kind: FailureKind | None
    failure_stage: str | None     # "config" | "startup" | "load"
    failure_mode: str | None      # "F0".."F8" of memory_model.md §1.10
    log_text: str
    excerpt: str                  # the failing lines, as they appear in log_text; "" on success
    kv_cache_tokens: int
    num_gpu_blocks: int
    available_kv_gib: float
    max_concurrency: float
    estimated_max_model_len: int  # F5's estimate, 0 otherwise
    throughput_tok_s: float
    requests_per_s: float
    latency_p50_ms: float         # end-to-end request latency
    latency_p99_ms: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    itl_p50_ms: float
    preemptions: int
    requests_completed: int
    rejected_requests: int        # workload requests longer than max_model_len (HTTP 400)
    peak_kv_usage: float          # 0..1
    peak_memory_gib: float        # vLLM's footprint on its busiest GPU (at the failure, if it failed)
    gpu_headroom_gib: float       # total − ctx − requested − co-tenants (min over GPUs)
    cotenant_slack_gib: float     # the same, less graph memory captured outside the budget (F8)
    marginal: bool                # F6 risk near the edge (memory.Startup.marginal)
    free_at_init_gib: float
    requested_gib: float
    weights_gib: float
    activation_gib: float
    non_torch_gib: float
    cudagraph_gib: float          # captured graph memory (0 with enforce_eager)
    duration_s: float             # simulated wall time of the canary
    metrics_text: str             # a /metrics scrape after the load phase ("" if it never served)
    #: what production's /metrics watcher reports of this config serving the workload (edges/sim/metrics.py)
    metrics_symptoms: list[str] = []


def simulate(scenario: Scenario | str, config: ServingConfig | None = None, *, render: bool = True,
             loads: LoadMemo | None = None) -> SimResult:
    """Start `config` (default: the scenario's current config) on `scenario`, load it, measure.

    `render=False` leaves out vLLM's words (`log_text`, `excerpt` and `metrics_text` are
    empty); every number is the same. `loads` (of this scenario) schedules each distinct load phase once."""
    if isinstance(scenario, str):
        scenario = load_scenario(scenario)
    config = scenario.current if config is None else config
    st = account(scenario, config)
    log = Log() if render else QuietLog()
    excerpt = _startup_log(log, scenario, config, st)
    load: Load | None = None
    symptoms: list[str] = []
    if st.ok:
        load = run_load(scenario, config, st, memo=loads)
        excerpt = load_log(log, scenario, config, load)
        symptoms = sim_metrics.symptoms(load, model=scenario.model.name if render else None)
        if load.passed and symptoms:
            # the server's log holds none of this: the watcher's line is the evidence (the canary
            # harness and the demo add the lines to what the observer reads)
            excerpt = symptoms[:1]
            load = msgspec.structs.replace(load, passed=False,
                                           failure_kind=sim_metrics.symptom_kind(symptoms[0]))
    return _result(scenario, config, st, load, log, excerpt if render else [], symptoms)


def _g(b: int) -> float:
    return round(b / GIB, 4)


def _result(s: Scenario, c: ServingConfig, st: Startup, load: Load | None, log: Log, excerpt: list[str],
            symptoms: list[str]) -> SimResult:
    ws = st.workers
    f = st.failure
    kv_sized = st.reached in ("kv", "capture", "ready")
    allocated = st.reached in ("capture", "ready")
    if f is None:
        peak = max(st.footprint(w) for w in ws)
    elif f.oom is not None:
        peak = f.oom.this_process
    elif ws:
        w = ws[f.rank]
        peak = CUDA_CTX + w.nccl + (w.weights + w.activation + w.non_torch + w.cg_estimate if kv_sized else 0)
    else:
        peak = 0
    mode = f.mode if f else ({"preemption_storm": "F7", "kv_cache_pressure": "F7", "queue_growth": "F7",
                              "cotenant_oom": "F8"}.get(load.failure_kind) if load else None)
    measured = {name: (round(getattr(load, name), digits) if load else 0.0) for name, digits in (
        ("throughput_tok_s", 3), ("requests_per_s", 4), ("latency_p50_ms", 3), ("latency_p99_ms", 3),
        ("ttft_p50_ms", 3), ("ttft_p99_ms", 3), ("itl_p50_ms", 3), ("peak_kv_usage", 4))}
    first = ws[0] if ws else None
    return SimResult(
        scenario=s.name, config=c, started=f is None, passed_load=bool(load and load.passed),
        failure_kind=f.kind if f else (load.failure_kind if load else None),
        failure_stage=f.stage if f else ("load" if load and not load.passed else None),
        failure_mode=mode, log_text=log.text(), excerpt="\n".join(excerpt),
        kv_cache_tokens=st.kv_tokens if allocated else 0, num_gpu_blocks=st.num_blocks if allocated else 0,
        available_kv_gib=_g(min(w.available_kv for w in ws)) if kv_sized else 0.0,
        max_concurrency=round(st.max_concurrency, 4) if allocated else 0.0,
        estimated_max_model_len=st.estimated_max_len, **measured,
        preemptions=load.preemptions if load else 0, requests_completed=load.completed if load else 0,
        rejected_requests=load.rejected_requests if load else 0, peak_memory_gib=_g(peak),
        gpu_headroom_gib=_g(min(w.headroom for w in ws)) if ws else 0.0,
        cotenant_slack_gib=_g(min(w.slack for w in ws)) if ws else 0.0, marginal=st.marginal,
        free_at_init_gib=_g(min(w.free_at_init for w in ws)) if ws else 0.0,
        requested_gib=_g(first.requested) if first else 0.0, weights_gib=_g(first.weights) if first else 0.0,
        activation_gib=_g(first.activation) if first else 0.0, non_torch_gib=_g(first.non_torch) if first else 0.0,
        cudagraph_gib=_g(first.cg_actual) if first and f is None else 0.0,
        duration_s=round(log.t, 3),
        metrics_text=lt.metrics_text(s.model.name, preemptions=load.preemptions, prompt_tokens=load.prompt_tokens,
                                     generation_tokens=load.generation_tokens, completed=load.completed)
        if load and log.renders else "",
        metrics_symptoms=symptoms,
    )


# --- startup --------------------------------------------------------------------------------------

def _procs(s: Scenario) -> list[str]:
    """Who logs the worker's lines: the engine core itself at TP1, a worker process per GPU otherwise."""
    tp = s.tensor_parallel_size
    return [ENGINE] if tp == 1 else [lt.worker(r) for r in range(tp)]


def _startup_log(log: Log, s: Scenario, c: ServingConfig, st: Startup) -> list[str]:
    m, tp, eager = s.model, s.tensor_parallel_size, c.enforce_eager
    graphs = st.piecewise_graphs > 0
    f = st.failure
    # `if log.renders:` guards the lines that only print (a prediction's quiet log keeps only
    # the clock); every advance of the clock and every failure stays outside the guards
    if log.renders:
        log.info(API, "utils.py:302", lt.BANNER.format(version=lt.VLLM_VERSION, model=m.name))
        args: dict[str, object] = {"model_tag": m.name, "host": "127.0.0.1", "port": lt.PORT, "model": m.name,
                                   "max_model_len": c.max_model_len}
        if tp > 1:
            args["tensor_parallel_size"] = tp
        args.update(gpu_memory_utilization=c.gpu_memory_utilization,
                    max_num_batched_tokens=c.max_num_batched_tokens, max_num_seqs=c.max_num_seqs)
        if eager:
            args["enforce_eager"] = True
        if s.engine.kv_cache_dtype != "auto":
            args["kv_cache_dtype"] = s.engine.kv_cache_dtype
        if c.kv_cache_memory_bytes is not None:
            args["kv_cache_memory_bytes"] = c.kv_cache_memory_bytes
        log.info(API, "utils.py:238", f"non-default args: {args}")
    log.advance(4.0)
    log.info(API, "model.py:601", f"Resolved architecture: {m.architecture}")
    if f and f.mode == "F0" and f.check == "max_model_len_above_derived":
        return _config_error(log, s, c, f.check)
    log.info(API, "model.py:1727", f"Using max model len {c.max_model_len}")
    if f and f.mode == "F0" and f.stage == "config":
        return _config_error(log, s, c, f.check)
    if s.engine.chunked_prefill and log.renders:
        log.info(API, "scheduler.py:252",
                 f"Chunked prefill is enabled with max_num_batched_tokens={c.max_num_batched_tokens}.")
    if c.max_num_batched_tokens > c.max_num_seqs * c.max_model_len and log.renders:
        log.warning(API, "scheduler.py:290", f"max_num_batched_tokens ({c.max_num_batched_tokens}) exceeds "
                    f"max_num_seqs * max_model_len ({c.max_num_seqs * c.max_model_len}). This may lead to "
                    "unexpected behavior.")

    log.advance(_API_TO_ENGINE_S)
    sizes = capture_sizes(c.max_num_seqs, c.max_num_batched_tokens) if graphs and log.renders else []
    if log.renders:
        log.info(ENGINE, "core.py:114", lt.engine_config(
            m.name, max_model_len=c.max_model_len, tp=tp, quantization=m.quantization, eager=eager,
            chunked=s.engine.chunked_prefill, capture_sizes=sizes, dtype=m.dtype, kv_cache_dtype=s.engine.kv_cache_dtype))
    procs = _procs(s)
    log.advance(_DIST_INIT_S + (2.0 if tp > 1 else 0.0))
    for r, p in enumerate(procs):
        log.info(p, "parallel_state.py:1923", f"rank {r} in world size {tp} is assigned as DP rank 0, PP rank 0, "
                 f"PCP rank 0, TP rank {r}, EP rank N/A, EPLB rank N/A")
    if f and f.check == "dtype_capability":
        msg = lt.bf16_unsupported(s.gpu.name, s.gpu.compute_capability or "")
        return _engine_failure(log, s, f.rank, "init", [("vllm/v1/executor/uniproc_executor.py", 47, "_init_executor",
                               "self.driver_worker.init_device()")], lt.INIT_DEVICE[:1] + lt.DTYPE_CHECK,
                               f"ValueError: {msg}")
    if f and f.mode == "F1":
        w = st.workers[f.rank]
        msg = lt.free_memory_below_utilization(f"cuda:{f.rank}", w.free_at_init, w.total,
                                               c.gpu_memory_utilization, w.requested)
        return _engine_failure(log, s, f.rank, "init", [("vllm/v1/executor/uniproc_executor.py", 47, "_init_executor",
                               "self.driver_worker.init_device()")], lt.INIT_DEVICE, f"ValueError: {msg}")
    for p in procs if log.renders else ():
        log.info(p, "gpu_model_runner.py:5160", f"Starting to load model {m.name}...")
    load_s = _load_s(m.weights_gib)
    log.advance(load_s)
    if f and f.mode == "F2":
        oom = _oom_text(s, f.rank, f.oom, st)
        first = log.log(procs[f.rank], "ERROR", "gpu_model_runner.py:5212", lt.load_model_oom(oom))
        return first + _engine_failure(log, s, f.rank, "init", [("vllm/v1/executor/uniproc_executor.py", 48,
                                       "_init_executor", "self.driver_worker.load_model()")], lt.LOAD_MODEL,
                                       f"torch.OutOfMemoryError: {oom}")
    for p in procs if log.renders else ():
        log.info(p, "default_loader.py:430", f"Loading weights took {load_s - 0.4:.2f} seconds")
        log.info(p, "gpu_model_runner.py:5255",
                 f"Model loading took {lt.format_gib(st.workers[0].weights)} GiB memory and {load_s:.6f} seconds")
    compile_s = 0.0 if eager else _compile_s(m.layers)
    if not eager:
        log.advance(compile_s)
        for p in procs if log.renders else ():
            log.info(p, "backends.py:1148", f"Dynamo bytecode transform time: {compile_s * 0.3:.2f} s")
            log.info(p, "monitor.py:53", f"torch.compile took {compile_s:.2f} s in total")
    log.advance(_PROFILE_S)
    if f and f.mode == "F3":
        return _profile_failure(log, s, c, st)
    for p in procs if log.renders else ():
        log.info(p, "monitor.py:81", f"Initial profiling/warmup run took {_PROFILE_S:.2f} s")
    w0 = st.workers[0]
    if graphs:
        largest_full = min(c.max_num_seqs, FULL_GRAPH_CAP)
        full_cap = max((x for x in sizes if x <= largest_full), default=0)
        for p in procs if log.renders else ():
            log.info(p, "gpu_model_runner.py:6483", f"Profiling CUDA graph memory: PIECEWISE={st.piecewise_graphs} "
                     f"(largest={max(sizes)}), FULL={st.full_graphs} (largest={full_cap})")
        log.advance(round(0.05 * (st.piecewise_graphs + st.full_graphs), 2))
        for p in procs if log.renders else ():
            log.info(p, "gpu_model_runner.py:6588",
                     f"Estimated CUDA graph memory: {w0.cg_estimate / GIB:.2f} GiB total")
    kv_lines = []
    if c.kv_cache_memory_bytes is not None and log.renders:
        for p in procs:
            log.info(p, "gpu_worker.py:318", lt.kv_cache_memory_reserved(c.kv_cache_memory_bytes))
    for w, p in zip(st.workers, procs) if log.renders else ():
        kv_lines += log.info(p, "gpu_worker.py:515", f"Available KV cache memory: {lt.format_gib(w.available_kv)} GiB")
    if graphs and s.engine.estimate_cudagraphs and log.renders:
        log.info(procs[0], "gpu_worker.py:530",
                 lt.cudagraph_advisory(c.gpu_memory_utilization, w0.cg_estimate, w0.total))
    elif graphs and log.renders:
        log.warning(procs[0], "gpu_worker.py:545",
                    lt.cudagraph_disabled_warning(c.gpu_memory_utilization, w0.cg_estimate, w0.total))
    if f and f.mode in ("F4", "F5"):
        if f.mode == "F4":
            msg = lt.no_kv_cache_memory()
        else:
            msg = lt.max_model_len_exceeds_kv(c.max_model_len, st.needed_kv, min(w.available_kv for w in st.workers),
                                              st.estimated_max_len)
        return kv_lines[f.rank:f.rank + 1] + _engine_failure(log, s, None, "kv", [], lt.KV_CHECK, f"ValueError: {msg}")
    if log.renders:
        log.info(ENGINE, "kv_cache_utils.py:2146", f"GPU KV cache size: {st.kv_tokens:,} tokens")
        log.info(ENGINE, "kv_cache_utils.py:2147",
                 f"Maximum concurrency for {c.max_model_len:,} tokens per request: {st.max_concurrency:.2f}x")
    if graphs:
        capture_s = round(0.06 * (st.piecewise_graphs + st.full_graphs), 2)
        log.advance(capture_s)
        if f and f.mode == "F6":
            return _engine_failure(log, s, f.rank, "rpc", [], lt.CAPTURE,
                                   f"torch.OutOfMemoryError: {_oom_text(s, f.rank, f.oom, st)}")
        for w, p in zip(st.workers, procs) if log.renders else ():
            log.info(p, "gpu_model_runner.py:6656",
                     f"Graph capturing finished in {capture_s:.0f} secs, took {w.cg_actual / GIB:.2f} GiB")
            diff = w.cg_actual - w.cg_estimate
            log.info(p, "gpu_worker.py:748", f"CUDA graph pool memory: {lt.format_gib(w.cg_actual)} GiB (actual), "
                     f"{lt.format_gib(w.cg_estimate)} GiB (estimated), difference: {lt.format_gib(diff)} GiB "
                     f"({100 * diff / max(1, w.cg_estimate):.1f}%).")
    if not log.renders:
        log.advance(_API_READY_S)
        return []
    log.info(ENGINE, "core.py:337", f"init engine (profile, create kv cache, warmup model) took "
             f"{log.t - _API_TO_ENGINE_S - 4.0:.2f} s (compilation: {compile_s:.2f} s)")
    log.advance(_API_READY_S)
    log.info(API, "api_server.py:619", "Supported tasks: ['generate']")
    log.info(API, "api_server.py:623", f"Starting vLLM server on http://127.0.0.1:{lt.PORT}")
    log.info(API, "launcher.py:37", "Available routes are:")
    for route, methods in (("/health", "GET"), ("/metrics", "GET"), ("/v1/models", "GET"),
                           ("/v1/chat/completions", "POST"), ("/v1/completions", "POST")):
        log.info(API, "launcher.py:46", f"Route: {route}, Methods: {methods}")
    log.raw(API, f"INFO:     Started server process [{lt.API_PID}]\nINFO:     Waiting for application startup.\n"
                 "INFO:     Application startup complete.")
    return []


def _config_error(log: Log, s: Scenario, c: ServingConfig, check: str) -> list[str]:
    """F0: pydantic rejects the config in the API server, before any GPU work (§1.8)."""
    if not log.renders:
        return []
    quant = s.model.quantization or ""
    cls, call, err = lt.config_error(check, model=s.model.name, derived=s.model.max_position_embeddings,
                                     util=c.gpu_memory_utilization, mnbt=c.max_num_batched_tokens,
                                     seqs=c.max_num_seqs, mml=c.max_model_len, chunked=s.engine.chunked_prefill,
                                     quant=quant, quant_min=QUANT_MIN_CAPABILITY.get(quant, 0),
                                     capability=s.gpu.capability or 0)
    frames = lt.API_CONFIG + [
        ("vllm/engine/arg_utils.py", 1305, "create_engine_config", call),
        ("pydantic/_internal/_dataclasses.py", 121, "__init__",
         "s.__pydantic_validator__.validate_python(ArgsKwargs(args, kwargs), self_instance=s)"),
    ]
    lines = log.raw(API, lt.traceback(frames, err))
    # the ValidationError line and the line with vLLM's message (pydantic's footer is noise)
    return [x for x in lines if "ValidationError" in x or "[type=" in x]


def _profile_failure(log: Log, s: Scenario, c: ServingConfig, st: Startup) -> list[str]:
    if not log.renders:
        return []
    f = st.failure
    oom = f"torch.OutOfMemoryError: {_oom_text(s, f.rank, f.oom, st)}"
    if f.check == "forward":
        return _engine_failure(log, s, f.rank, "rpc", [], lt.PROFILE + lt.PROFILE_FORWARD, oom)
    wrapped = "RuntimeError: " + lt.sampler_warmup_oom(min(c.max_num_seqs, c.max_num_batched_tokens))
    # a chained cause's traceback runs from the frame that caught it (`_dummy_sampler_run`) down
    cause = lt.traceback(lt.PROFILE_SAMPLER[1:] + [
        ("torch/nn/modules/module.py", 1786, "_call_impl", "return forward_call(*args, **kwargs)")], oom) + lt.CAUSE
    return _engine_failure(log, s, f.rank, "rpc", [], lt.PROFILE + lt.PROFILE_SAMPLER[:1] + lt.SAMPLER_RAISE, wrapped,
                           cause=cause, also=oom)


def _engine_failure(log: Log, s: Scenario, rank: int | None, where: str, executor: list, root: list, exc: str,
                    cause: str = "", also: str = "") -> list[str]:
    """The traceback tail of a failed engine start. `where`: "init" (worker construction), "rpc" (a worker
    call during KV sizing or capture), "kv" (the engine core itself). Returns the excerpt lines."""
    if not log.renders:
        return []
    tp = s.tensor_parallel_size
    needles = [x for x in (also, exc) if x]
    excerpt: list[str] = []
    if tp == 1 or where == "kv":
        head = lt.ENGINE_ENTRY + (lt.EXECUTOR_INIT + executor if where == "init" else lt.KV_CACHES)
        frames = head + (root if where != "kv" else lt.KV_CHECK)
        tail = exc
    else:
        wproc = lt.worker(rank)
        if where == "init":
            call = executor[0][3].replace("driver_worker", "worker")    # init_device() or load_model()
            wframes = [("vllm/v1/executor/multiproc_executor.py", 722, "worker_main",
                        "worker = WorkerProc(*args, **kwargs)"),
                       ("vllm/v1/executor/multiproc_executor.py", 560, "__init__", call)] + root
            wlines = log.log(wproc, "ERROR", "multiproc_executor.py:773",
                             "WorkerProc failed to start.\n" + cause + lt.traceback(wframes, exc))
            frames = lt.ENGINE_ENTRY + lt.EXECUTOR_INIT + [
                ("vllm/v1/executor/multiproc_executor.py", 131, "_init_executor",
                 "self.workers = WorkerProc.wait_for_ready(unready_workers)"),
                ("vllm/v1/executor/multiproc_executor.py", 509, "wait_for_ready", "raise e from None")]
            tail = lt.WORKER_INIT_FAILED
        else:
            wframes = [("vllm/v1/executor/multiproc_executor.py", 846, "worker_busy_loop",
                        "output = func(*args, **kwargs)")] + root[1:]
            wlines = log.log(wproc, "ERROR", "multiproc_executor.py:852",
                             "WorkerProc hit an exception.\n" + cause + lt.traceback(wframes, exc))
            frames = lt.ENGINE_ENTRY + lt.KV_CACHES + root[:1] + [
                ("vllm/v1/executor/multiproc_executor.py", 341, "get_response", "raise RuntimeError(")]
            tail = lt.worker_rpc_failed(exc.split(": ", 1)[1])
        excerpt = [_first(wlines, n) for n in needles]
        cause = ""
    lines = log.log(ENGINE, "ERROR", "core.py:1100",
                    "EngineCore failed to start.\n" + cause + lt.traceback(frames, tail))
    if not excerpt:
        excerpt = [_first(lines, n) for n in needles]
    log.raw(ENGINE, "Process EngineCore:\n" + lt.traceback(
        [("/usr/lib/python3.12/multiprocessing/process.py", 314, "_bootstrap", "self.run()")] + frames, tail))
    log.raw(API, lt.traceback(lt.API_ENGINE_FAILED, lt.ENGINE_INIT_FAILED))
    return excerpt


def _first(lines: list[str], needle: str) -> str:
    if not lines:
        return ""  # a QuietLog's: a prediction renders no lines
    return next(x for x in lines if x.endswith(needle))


def _oom_text(s: Scenario, rank: int, oom, st: Startup) -> str:
    pid = lt.ENGINE_PID if s.tensor_parallel_size == 1 else lt.WORKER_PID0 + rank
    procs = [(c.pid, round(c.used_gib * GIB)) for c in s.cotenants_on(rank)]
    return lt.torch_oom(tried=oom.tried, gpu=rank, total=st.workers[rank].total, free=oom.free, processes=procs,
                        self_pid=pid, self_bytes=oom.this_process, allocated=oom.allocated,
                        private_pool=oom.private_pool, reserved_unallocated=oom.reserved_unallocated)
