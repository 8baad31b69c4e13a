"""vLLM V1 startup memory accounting, per GPU worker (memory_model.md §1 and §5).

Pure arithmetic on integer bytes: no text here (edges/sim/logtext.py renders it), no load phase
(serving.py). `account(scenario, config)` walks vLLM's startup in order and stops at the
first failure, F0 (config validation) to F6 (post-KV OOM), exactly as vLLM would.
"""
from __future__ import annotations

import math

import msgspec

from selfheal.schemas.failures import FindingKind
from selfheal.schemas.scenario import Scenario
from selfheal.schemas.serving import ServingConfig

GIB = 1 << 30
MIB = 1 << 20


def gib(value: float) -> int:
    """GiB -> bytes, rounded to the byte so that all later arithmetic is exact."""
    return round(value * GIB)


#: tokens per KV block; the CUDA platform sets 16 (§1.9)
BLOCK_SIZE = 16
#: this process's CUDA context, already "used" at the init snapshot (§3 shared constants)
CUDA_CTX = gib(0.45)
#: cuBLAS workspaces, attention buffers, NCCL grown during the profile (§3: 0.15 at TP1, 0.4/GPU at TP2)
NON_TORCH_TP1 = gib(0.15)
NON_TORCH_TPN = gib(0.40)
#: NCCL buffers set up before the init snapshot at TP>1, so they count as used (§1.1 step 1, "≈0.1–0.5")
NCCL_AT_INIT = gib(0.25)
#: the graph count at which a model's `cudagraph_gib` is quoted: 51 piecewise + 35 full (§1.9, §3)
CG_REFERENCE_GRAPHS = 51 + 35
#: captured graph pool vs. the estimate; real 0.23 logs print "difference: 0.02 GiB (2.7%)",
#: "0.01 GiB (1.1%)", so the estimator runs ~2% short [log]
CG_ACTUAL_OVER_ESTIMATE = 1.02
#: post-KV headroom under which F6 is "probabilistic near the edge" (§5 step 6: "< ~150 MiB")
MARGINAL_HEADROOM = 150 * MIB
#: "Most likely with util >= 0.95" (§1.10 F6)
MARGINAL_UTIL = 0.95
#: FULL (decode) graphs are captured up to this batch even when max_num_seqs is larger [log:
#: "PIECEWISE=51 (largest=512), FULL=35 (largest=256)"]
FULL_GRAPH_CAP = 256


class Oom(msgspec.Struct, frozen=True, kw_only=True):
    """The numbers of one torch allocator OOM (error_formats.md §5)."""
    tried: int
    free: int
    this_process: int
    allocated: int
    private_pool: int = 0
    reserved_unallocated: int = 0


class Failure(msgspec.Struct, frozen=True, kw_only=True):
    mode: str            # "F0".."F6" of §1.10
    kind: FindingKind    # failure kind of error_formats.md
    stage: str           # "config" | "startup"
    rank: int = 0        # the worker that raised
    check: str = ""      # F0: which validation; F3: "forward" | "sampler"
    oom: Oom | None = None


class WorkerMemory(msgspec.Struct, frozen=True, kw_only=True):
    """One GPU worker's accounting, all in bytes (§1.1–§1.5)."""
    rank: int
    total: int
    others: int           # co-tenants on this GPU
    nccl: int
    free_at_init: int     # total − others − ctx − nccl (§1.1)
    requested: int        # ceil(util × total) (§1.1 step 3, 0.14+)
    weights: int
    act_forward: int      # mnbt × 6 × I/TP (§3)
    act_sampler: int      # min(seqs, mnbt) × vocab × 4 (§3)
    non_torch: int
    cg_estimate: int
    cg_applied: int       # subtracted from the KV budget (estimator on, graphs on)
    cg_actual: int        # what capture really takes (0 with enforce_eager)
    available_kv: int     # requested − weights − act − non_torch − cg_applied (§1.3 formula)
    num_blocks: int       # this worker's own count; all workers then use the min (§1.5)
    unreserved: int       # post-KV allocations outside `requested` (§1.10 F6)

    @property
    def activation(self) -> int:
        return self.act_forward + self.act_sampler

    @property
    def headroom(self) -> int:
        """total − ctx − nccl − requested − co-tenants: room left outside vLLM's budget."""
        return self.free_at_init - self.requested

    @property
    def slack(self) -> int:
        """What co-tenants can still grow into once vLLM has settled (F8)."""
        return self.headroom - self.unreserved


class Startup(msgspec.Struct, frozen=True, kw_only=True):
    config: ServingConfig
    workers: list[WorkerMemory]
    failure: Failure | None
    kv_bytes_per_token: int       # per GPU (§1.4)
    block_bytes: int              # one block, all layers, per GPU
    num_blocks: int               # min over workers (§1.5); 0 when startup stopped before KV sizing
    needed_kv: int                # bytes for one max_model_len request (§1.6)
    estimated_max_len: int        # F5's estimate, 0 otherwise
    piecewise_graphs: int
    full_graphs: int
    reached: str                  # the last phase reached: config|init|load|profile|kv|capture|ready

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def kv_tokens(self) -> int:
        """What vLLM prints as "GPU KV cache size: N tokens" (num_blocks × block_size, §1.5)."""
        return self.num_blocks * BLOCK_SIZE

    @property
    def max_concurrency(self) -> float:
        """num_blocks / the blocks of one max_model_len request (§1.7: cdiv(max_model_len, block_size)
        for full attention)."""
        return self.num_blocks * self.block_bytes / self.needed_kv

    @property
    def marginal(self) -> bool:
        """F6 risk near the edge, as a deterministic flag: post-KV slack < 150 MiB or util >= 0.95."""
        if not self.workers:
            return False
        return (min(w.slack for w in self.workers) < MARGINAL_HEADROOM
                or self.config.gpu_memory_utilization >= MARGINAL_UTIL)

    def footprint(self, w: WorkerMemory) -> int:
        """vLLM's real memory on worker w: ctx + nccl + weights + KV + activations + non-torch + graphs."""
        kv = self.num_blocks * self.block_bytes
        return CUDA_CTX + w.nccl + w.weights + kv + w.activation + w.non_torch + w.cg_actual


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def capture_sizes(max_num_seqs: int, max_num_batched_tokens: int) -> list[int]:
    """vLLM's CUDA-graph batch sizes (§1.9 `_set_cudagraph_sizes`)."""
    max_capture = min(max_num_seqs * 2, 512, max_num_batched_tokens)
    sizes = [1, 2, 4] + list(range(8, 256, 8)) + list(range(256, max_capture + 1, 16))
    return [s for s in sizes if s <= max_capture]


def graph_counts(config: ServingConfig) -> tuple[int, int]:
    """(piecewise, full) graphs captured; (0, 0) in eager mode."""
    if config.enforce_eager:
        return 0, 0
    sizes = capture_sizes(config.max_num_seqs, config.max_num_batched_tokens)
    full_cap = min(config.max_num_seqs, FULL_GRAPH_CAP)
    return len(sizes), len([s for s in sizes if s <= full_cap])


def kv_bytes_per_token(scenario: Scenario) -> int:
    """2 × layers × max(1, kv_heads // TP) × head_dim × dtype bytes, per GPU (§1.4); an fp8 KV
    cache stores one byte an element, whatever the model's dtype."""
    m, tp = scenario.model, scenario.tensor_parallel_size
    dtype = 1 if scenario.engine.kv_fp8 else m.dtype_bytes
    return 2 * m.layers * max(1, m.kv_heads // tp) * m.head_dim * dtype


def window_blocks(scenario: Scenario, config: ServingConfig) -> int | None:
    """The most blocks a sliding layer holds of one request: window − 1 + max_num_batched_tokens
    tokens, plus one block (§1.4); None for a model without sliding layers."""
    window = scenario.model.sliding_window
    if window is None or scenario.model.window_layers == 0:
        return None
    return _cdiv(window - 1 + config.max_num_batched_tokens, BLOCK_SIZE) + 1


def request_blocks(scenario: Scenario, config: ServingConfig, tokens: int) -> int:
    """KV blocks (of all layers) that one request of `tokens` tokens holds. A block is one
    block_size page of every layer; a sliding layer stops growing at `window_blocks`, so a
    hybrid model's request holds the full layers' pages plus the capped sliding ones, in whole
    blocks (vLLM groups the two kinds of layer apart, §1.5; the cache's bytes are the same)."""
    full = _cdiv(tokens, BLOCK_SIZE)
    cap = window_blocks(scenario, config)
    if cap is None or full <= cap:
        return full
    layers, sliding = scenario.model.layers, scenario.model.window_layers
    return _cdiv((layers - sliding) * full + sliding * cap, layers)


def estimate_max_len(scenario: Scenario, config: ServingConfig, num_blocks: int) -> int:
    """vLLM's estimate on F5: the largest length whose one request fits the cache (§1.6), a
    whole number of blocks; with sliding layers a request grows more slowly past the window."""
    if window_blocks(scenario, config) is None:
        return num_blocks * BLOCK_SIZE
    lo, hi = 0, config.max_model_len
    while lo < hi:     # request_blocks grows with the length: binary search, as vLLM does
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if request_blocks(scenario, config, mid) <= num_blocks else (lo, mid - 1)
    return lo


#: vLLM's minimum compute capability per quantization method (get_min_capability of each
#: QuantizationConfig, vllm/model_executor/layers/quantization/*, 0.2x): AWQ, GPTQ-Marlin, FP8 75;
#: GPTQ 60; compressed-tensors and bitsandbytes 70; ModelOpt FP8 and MXFP4 80
QUANT_MIN_CAPABILITY = {
    "awq": 75, "awq_marlin": 75, "gptq": 60, "gptq_marlin": 75, "marlin": 75, "fp8": 75,
    "compressed-tensors": 70, "bitsandbytes": 70, "modelopt": 80, "mxfp4": 80,
}
#: bfloat16 needs Ampere (worker init_device, _check_if_gpu_supports_dtype / check_if_supports_dtype)
BF16_MIN_CAPABILITY = 80


def capability_error(scenario: Scenario) -> str:
    """What the GPU's compute capability refuses, in vLLM's order: the quantization method when
    the engine config is built, then bfloat16 when the worker starts; "" when nothing (or when
    the scenario gives no capability)."""
    cap = scenario.gpu.capability
    if cap is None:
        return ""
    quant = scenario.model.quantization
    if quant is not None and cap < QUANT_MIN_CAPABILITY.get(quant, 0):
        return "quantization_capability"
    if scenario.model.dtype == "bfloat16" and cap < BF16_MIN_CAPABILITY:
        return "dtype_capability"
    return ""


def config_error(scenario: Scenario, config: ServingConfig) -> str:
    """The first F0 check that fails, in vLLM's order (§1.8, error_formats.md §7), or ""."""
    # ModelConfig is built first, then CacheConfig, then SchedulerConfig (engine/arg_utils.py),
    # then VllmConfig, which checks the quantization against the GPU
    if config.max_model_len > scenario.model.max_position_embeddings:
        return "max_model_len_above_derived"
    util = config.gpu_memory_utilization
    if util > 1:
        return "util_above_1"
    if util <= 0:
        return "util_not_positive"
    if not scenario.engine.chunked_prefill and config.max_num_batched_tokens < config.max_model_len:
        return "batched_below_model_len"
    if config.max_num_batched_tokens < config.max_num_seqs:
        return "batched_below_seqs"
    if capability_error(scenario) == "quantization_capability":
        return "quantization_capability"
    return ""


def account(scenario: Scenario, config: ServingConfig) -> Startup:
    """Walk vLLM's startup (§5) for `config` on `scenario`; stop at the first failure."""
    for name in ("max_model_len", "max_num_seqs", "max_num_batched_tokens"):
        if getattr(config, name) < 1:
            # -1 ("auto") and other non-positive values are not modelled (§1.6 auto-fit)
            raise ValueError(f"{name}={getattr(config, name)} is not supported by the simulator (must be >= 1)")
    if config.kv_cache_memory_bytes is not None and config.kv_cache_memory_bytes < 1:
        raise ValueError(f"kv_cache_memory_bytes={config.kv_cache_memory_bytes} must be a positive byte count")
    kvbpt = kv_bytes_per_token(scenario)
    block_bytes = kvbpt * BLOCK_SIZE
    needed = request_blocks(scenario, config, config.max_model_len) * block_bytes
    pw, full = graph_counts(config)

    def done(workers, failure, reached, num_blocks=0, est=0):
        return Startup(config=config, workers=workers, failure=failure, kv_bytes_per_token=kvbpt,
                       block_bytes=block_bytes, num_blocks=num_blocks, needed_kv=needed,
                       estimated_max_len=est, piecewise_graphs=pw, full_graphs=full, reached=reached)

    check = config_error(scenario, config)
    if check:
        kind = "batched_tokens_below_model_len" if check == "batched_below_model_len" else "other_config_error"
        return done([], Failure(mode="F0", kind=kind, stage="config", check=check), "config")

    workers = [_worker(scenario, config, rank, kvbpt, pw + full) for rank in range(scenario.tensor_parallel_size)]

    # the worker's init_device refuses a dtype the GPU cannot run, before its memory gate
    if capability_error(scenario) == "dtype_capability":
        return done(workers, Failure(mode="F0", kind="other_config_error", stage="startup",
                                     check="dtype_capability"), "init")

    # F1: init_device's free-memory gate, per worker (§1.1 step 4)
    for w in workers:
        if w.free_at_init < w.requested:
            return done(workers, Failure(mode="F1", kind="startup_free_memory_below_utilization",
                                         stage="startup", rank=w.rank), "init")
    # F2: weights do not fit in what is free (§1.2); the allocator fails on the tensor that crosses the line
    for w in workers:
        if w.weights > w.free_at_init:
            chunk = _round_up(w.weights // scenario.model.layers, 2 * MIB)
            loaded = (w.free_at_init // chunk) * chunk
            oom = Oom(tried=chunk, free=w.free_at_init - loaded, this_process=CUDA_CTX + w.nccl + loaded,
                      allocated=loaded)
            return done(workers, Failure(mode="F2", kind="cuda_oom_allocation", stage="startup", rank=w.rank,
                                         oom=oom), "load")
    # F3: the profile run (forward at mnbt, then the sampler on min(seqs, mnbt) rows) exceeds what is free;
    # it runs eagerly and is not bounded by `requested` (§1.3)
    for w in workers:
        base = w.weights + w.non_torch
        if base + w.act_forward > w.free_at_init:
            tried = _round_up(config.max_num_batched_tokens * 2 * scenario.model.intermediate_size
                              // scenario.tensor_parallel_size * scenario.model.dtype_bytes, 2 * MIB)
            return done(workers, _profile_oom(w, base, w.act_forward, tried, "forward"), "profile")
        if base + w.activation > w.free_at_init:
            tried = _round_up(w.act_sampler, 2 * MIB)
            return done(workers, _profile_oom(w, base + w.act_forward, w.act_sampler, tried, "sampler"), "profile")
    # F4 / F5: KV sizing (§1.6), per worker then min (§1.5)
    if any(w.available_kv <= 0 for w in workers):
        rank = min(w.rank for w in workers if w.available_kv <= 0)
        return done(workers, Failure(mode="F4", kind="no_kv_cache_memory", stage="startup", rank=rank), "kv")
    num_blocks = min(w.num_blocks for w in workers)
    if needed > min(w.available_kv for w in workers):
        # vLLM binary-searches the largest L whose one-request bytes fit: whole blocks (§1.6)
        return done(workers, Failure(mode="F5", kind="max_model_len_exceeds_kv_cache", stage="startup"),
                    "kv", num_blocks=num_blocks, est=estimate_max_len(scenario, config, num_blocks))
    # F6: graph capture after the KV cache is allocated needs memory outside `requested` (§1.10)
    for w in workers:
        if w.unreserved > w.headroom:
            n = pw + full
            per_graph = max(1, w.unreserved // n)
            captured = max(0, w.headroom) // per_graph
            free = max(0, w.headroom - captured * per_graph)
            pool = captured * (w.cg_actual // n)
            allocated = w.weights + num_blocks * block_bytes + pool
            oom = Oom(tried=_round_up(per_graph, 2 * MIB), free=free, private_pool=pool, allocated=allocated,
                      this_process=w.total - free - w.others)
            return done(workers, Failure(mode="F6", kind="cuda_graph_oom", stage="startup", rank=w.rank,
                                         oom=oom), "capture", num_blocks=num_blocks)
    return done(workers, None, "ready", num_blocks=num_blocks)


def _worker(scenario: Scenario, config: ServingConfig, rank: int, kvbpt: int, graphs: int) -> WorkerMemory:
    m, tp = scenario.model, scenario.tensor_parallel_size
    total = gib(scenario.gpu.total_gib)
    others = sum(gib(c.used_gib) for c in scenario.cotenants_on(rank))
    nccl = NCCL_AT_INIT if tp > 1 else 0
    free = total - others - CUDA_CTX - nccl
    requested = math.ceil(config.gpu_memory_utilization * total)
    weights = gib(m.weights_gib)
    mnbt, seqs = config.max_num_batched_tokens, config.max_num_seqs
    # §3 activation fit: gate_up (2I) + SiLU-mul (I) in bf16 at mnbt tokens, plus fp32 sampler logits
    act_forward = mnbt * 6 * m.intermediate_size // tp
    act_sampler = min(seqs, mnbt) * m.vocab_size * 4
    non_torch = NON_TORCH_TP1 if tp == 1 else NON_TORCH_TPN
    cg_estimate = gib(m.cudagraph_gib) * graphs // CG_REFERENCE_GRAPHS
    cg_actual = math.ceil(cg_estimate * CG_ACTUAL_OVER_ESTIMATE)
    cg_applied = cg_estimate if scenario.engine.estimate_cudagraphs else 0
    available = requested - (weights + act_forward + act_sampler + non_torch) - cg_applied
    unreserved = cg_actual - cg_applied
    if config.kv_cache_memory_bytes is not None:
        # §1.3: the size given replaces the profile's budget; what vLLM then holds is no longer
        # bounded by `requested`, so all of it counts against the memory outside the budget
        available = config.kv_cache_memory_bytes
        cg_applied = 0
        unreserved = weights + act_forward + act_sampler + non_torch + available + cg_actual - requested
    num_blocks = max(0, available // (kvbpt * BLOCK_SIZE))
    return WorkerMemory(
        rank=rank, total=total, others=others, nccl=nccl, free_at_init=free, requested=requested,
        weights=weights, act_forward=act_forward, act_sampler=act_sampler, non_torch=non_torch,
        cg_estimate=cg_estimate, cg_applied=cg_applied, cg_actual=cg_actual, available_kv=available,
        num_blocks=num_blocks, unreserved=unreserved,
    )


def _profile_oom(w: WorkerMemory, before: int, phase: int, tried: int, check: str) -> Failure:
    """F3: `before` bytes are held when the phase's allocations (of which `tried` fails) begin."""
    prior = max(0, min(phase - tried, w.free_at_init - before))
    free = max(0, w.free_at_init - before - prior)
    allocated = before - w.non_torch + prior
    oom = Oom(tried=tried, free=free, allocated=allocated, this_process=w.total - free - w.others)
    return Failure(mode="F3", kind="cuda_oom_allocation", stage="startup", rank=w.rank, check=check, oom=oom)


def _round_up(value: int, unit: int) -> int:
    return max(unit, _cdiv(value, unit) * unit)
