"""A predictor for real deployments, calibrated from what vLLM printed for this deployment (issue 15.5).

Pure: printed numbers and configs in, numbers out. vLLM prints its memory accounting at every
start and in its failures (memory_model.md section 1): the KV cache's memory and its size in
tokens, the weights, the activation peak, non-torch memory, CUDA-graph memory, and the device's
total. The observer's context rules read them (rules/50_context.toml, rules/55_calibration.toml;
observer/accounting.py keeps those of a log's last start attempt); this module fits the few
constants of vLLM's own formula to the starts seen so far (`calibrate`), and predicts a
candidate's KV cache in memory and tokens, with an error band (`predict`):

- bytes per token: a start that printed both the KV memory and its tokens (or, failing that,
  the KV memory one max-length request needs) gives it; it is the model's, not the config's.
- KV memory: set outright (`kv_cache_memory_bytes`, or an explicit size the deployment's
  environment sets, which the CPU build prints as "Explicitly set") it is that; else it is
  `utilization x total - overhead`, the overhead (weights, activation peak, non-torch memory,
  CUDA graphs; on the CPU build the worker's resident memory) that of a start sized by
  utilization (its KV memory is the reference), moved by what the candidate changes: the
  activation peak scales with max_num_batched_tokens, the CUDA-graph estimate goes with
  enforce_eager. The device's total is needed only where the utilization changes: as vLLM
  printed it, else from two starts at different utilizations, else NVML's (pre-flight's
  snapshot, which counts memory the driver keeps: a wider band).
- tokens: whole blocks, `floor(kv / (bytes_per_token x block_size)) x block_size`; a start
  needs one max-length request in the blocks left after vLLM's null block.

The band is relative, on the tokens. Before any prediction was checked it is the prior (or
what the printed precision allows, when nothing the candidate changes moves the cache); after
that it is 1.5 times the largest error of the last few predictions against what their canaries
measured: good predictions narrow it, a bad one widens it.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import msgspec

from selfheal.schemas.serving import ServingConfig

GIB = 1024 ** 3
#: the band before any prediction of this deployment was checked against a canary
PRIOR_BAND = 0.10
#: the band never gets narrower than this, however good the record
MIN_BAND = 0.01
#: how many of the latest checked predictions set the band, and by how much they are widened
RECENT = 3
WIDEN = 1.5
#: a printed GiB figure has two decimals: it is known to half a hundredth
PRINTED_GIB = 0.005
#: block sizes when the log does not say (memory_model.md 1.9; the CPU build uses 128, which
#: its "estimated maximum model length is 896" for 1 MiB of cache at 1 KiB a token shows)
GPU_BLOCK, CPU_BLOCK = 16, 128
MODEL = "calibration-1"


class StartFacts(msgspec.Struct, frozen=True, kw_only=True):
    """One start of this deployment: the config it ran, what its last start attempt printed."""

    source: str                     # the incident id of its log
    config: ServingConfig
    numbers: dict[str, float] = {}
    #: the measured KV tokens where a canary's backend recorded them (0: unknown)
    measured_tokens: int = 0


class KvPrediction(msgspec.Struct, frozen=True, kw_only=True):
    kv_gib: float | None = None
    kv_tokens: int | None = None
    low_tokens: int | None = None
    high_tokens: int | None = None
    band: float = 0.0
    starts: bool | None = None
    #: the failure kind a start that cannot work would show
    failure_kind: str | None = None
    reason: str = ""


class Calibration(msgspec.Struct, frozen=True, kw_only=True):
    """The constants fitted to this deployment's starts (None where no start told them)."""

    bytes_per_token: float | None = None
    block_size: int = GPU_BLOCK
    total_gib: float | None = None
    #: a start sized by utilization: its config, its KV memory, and the overhead beside it
    #: (None where the total is unknown)
    reference: ServingConfig | None = None
    reference_kv_gib: float | None = None
    overhead_gib: float | None = None
    #: where the total came from: "log", "starts", "nvml", ""
    total_from: str = ""
    activation_gib: float | None = None
    #: CUDA-graph memory and the config it was taken at (its capture sizes follow max_num_seqs)
    cudagraph_gib: float | None = None
    cudagraph_config: ServingConfig | None = None
    estimator_on: bool = True
    #: a KV size the deployment's environment sets (no config key does): it holds for every candidate
    fixed_kv_gib: float | None = None
    fixed_tokens: int | None = None
    free_gib: float | None = None
    #: relative precision of the KV memory the overhead was read from
    resolution: float = 0.0
    sources: list[str] = []


def _first(numbers: dict[str, float], *keys: str) -> float | None:
    return next((numbers[k] for k in keys if k in numbers), None)


def _tokens(f: StartFacts, block: int) -> int | None:
    n = f.numbers
    tokens = _first(n, "cal_kv_tokens", "cal_cpu_kv_tokens")
    if tokens is None and "cal_num_blocks" in n:
        tokens = n["cal_num_blocks"] * block
    if tokens is None and f.measured_tokens:
        tokens = f.measured_tokens
    return int(tokens) if tokens else None


def _kv(f: StartFacts) -> tuple[float | None, float]:
    """(KV GiB, its relative precision) of a start: exact where the config set the bytes."""
    if f.config.kv_cache_memory_bytes:
        return f.config.kv_cache_memory_bytes / GIB, 0.0
    kv = _first(f.numbers, "cal_explicit_kv_gib", "cal_kv_gib", "available_kv_gib")
    if kv is None or kv <= 0:
        return None, 0.0
    return kv, PRINTED_GIB / kv


def _sized_by_utilization(f: StartFacts) -> bool:
    return not f.config.kv_cache_memory_bytes and "cal_explicit_kv_gib" not in f.numbers


def _reference(f: StartFacts) -> tuple[float, float | None] | None:
    """(KV GiB, overhead GiB where the start says it) of a start whose cache utilization sized."""
    n = f.numbers
    if not _sized_by_utilization(f):
        return None  # the cache was sized outright: utilization said nothing about it
    if "budget_gib" in n and "requested_kv_gib" in n:  # the CPU build's failure says both
        return n["requested_kv_gib"], n["budget_gib"] - n["requested_kv_gib"]
    kv = _first(n, "cal_kv_gib", "available_kv_gib")
    if kv is None:
        return None
    return kv, n.get("cal_overhead_gib")  # the CPU build says its overhead


def _utilization(f: StartFacts) -> float:
    return _first(f.numbers, "cal_utilization", "requested_utilization") or f.config.gpu_memory_utilization


def _block(starts: Sequence[StartFacts]) -> int:
    for f in reversed(starts):
        if "block_size" in f.numbers:
            return int(f.numbers["block_size"])
    cpu = any(k in f.numbers for f in starts for k in ("cal_cpu_kv_tokens", "cal_explicit_kv_gib", "budget_gib",
                                                       "cal_overhead_gib"))
    return CPU_BLOCK if cpu else GPU_BLOCK


def calibrate(starts: Sequence[StartFacts], device_total_gib: float | None = None) -> Calibration:
    """Fit the model's constants to this deployment's starts, oldest first (the latest wins a tie).
    `device_total_gib`: the device's total as NVML read it, used where no start printed vLLM's."""
    block = _block(starts)
    per_token, precision = None, math.inf
    for f in starts:  # the most precise pair of KV memory and tokens
        kv, res = _kv(f)
        tokens = _tokens(f, block)
        if kv and tokens and res + 1 / tokens * block <= precision:
            per_token, precision = kv * GIB / tokens, res + block / tokens
    if per_token is None:  # a failure that says what one max-length request needs
        for f in starts:
            needed, length = f.numbers.get("needed_kv_gib"), f.numbers.get("max_model_len") or f.config.max_model_len
            if needed and needed >= 0.1 and length:
                per_token = needed * GIB / (math.ceil(length / block) * block)
    total, total_from = None, ""
    for f in starts:
        if _first(f.numbers, "cal_total_gib", "total_gib"):
            total, total_from = _first(f.numbers, "cal_total_gib", "total_gib"), "log"
        elif "budget_gib" in f.numbers and total is None:
            total, total_from = f.numbers["budget_gib"] / f.config.gpu_memory_utilization, "log"
    sized = [(f, _reference(f)) for f in starts]
    sized = [(f, ref) for f, ref in sized if ref is not None]
    if total is None:  # two starts alike but for utilization: the total is what the KV gained per unit
        for (f, (kv, _)), (g, (kv2, _)) in zip(sized, sized[1:]):
            du = _utilization(g) - _utilization(f)
            if abs(du) >= 0.01 and f.config.changed(gpu_memory_utilization=g.config.gpu_memory_utilization) == g.config:
                total, total_from = (kv2 - kv) / du, "starts"
    if total is None and device_total_gib:
        total, total_from = device_total_gib, "nvml"
    overhead = reference = reference_kv = activation = None
    resolution = 0.0
    for f, (kv, said) in sized:
        reference, reference_kv, resolution = f, kv, _kv(f)[1] if kv > 0 else 0.0
        overhead = said if said is not None else (_utilization(f) * total - kv if total is not None else None)
    graphs = graphs_at = None
    for f in starts:  # the reference's own figure, else the latest, with the config it was taken at
        g = _first(f.numbers, "cal_cudagraph_estimate_gib", "cal_cudagraph_gib")
        if g is not None and (graphs_at is None or graphs_at is not reference):
            graphs, graphs_at = g, f
    estimator = not any(f.numbers.get("cal_cudagraph_estimator") == 0 for f in starts)
    if reference is not None:
        activation = reference.numbers.get("cal_activation_gib")
    fixed_kv = fixed_tokens = None
    latest = starts[-1] if starts else None
    if latest is not None and "cal_explicit_kv_gib" in latest.numbers and not latest.config.kv_cache_memory_bytes:
        fixed_kv, fixed_tokens = latest.numbers["cal_explicit_kv_gib"], _tokens(latest, block)
    free = next((f.numbers["cal_free_gib"] for f in reversed(starts) if "cal_free_gib" in f.numbers), None)
    return Calibration(bytes_per_token=per_token, block_size=block, total_gib=total, total_from=total_from,
                       overhead_gib=overhead, reference=reference.config if reference else None,
                       reference_kv_gib=reference_kv, activation_gib=activation,
                       cudagraph_gib=graphs, cudagraph_config=graphs_at.config if graphs_at else None,
                       estimator_on=estimator, fixed_kv_gib=fixed_kv,
                       fixed_tokens=fixed_tokens, free_gib=free, resolution=resolution,
                       sources=[f.source for f in starts])


# --- predicting ------------------------------------------------------------------------------

def band_of(errors: Sequence[float], resolution: float) -> float:
    """The relative band of the next prediction: the prior until a prediction was checked, then
    WIDEN x the largest of the latest RECENT errors; never under the printed precision."""
    if not errors:
        return max(PRIOR_BAND, resolution, MIN_BAND)
    return max(WIDEN * max(abs(e) for e in errors[-RECENT:]), resolution, MIN_BAND)


#: CUDA-graph capture sizes vLLM picks (memory_model.md 1.9, config/vllm.py _set_cudagraph_sizes)
_CAPTURE_SIZES = (1, 2, 4, *range(8, 256, 8), *range(256, 513, 16))


def captures(config: ServingConfig) -> int:
    """How many batch sizes vLLM captures a CUDA graph for: up to 2 x max_num_seqs (at most 512,
    and at most max_num_batched_tokens); none in eager mode."""
    if config.enforce_eager:
        return 0
    largest = min(2 * config.max_num_seqs, 512, config.max_num_batched_tokens)
    return sum(1 for size in _CAPTURE_SIZES if size <= largest)


def _overhead_change(cal: Calibration, config: ServingConfig) -> float:
    """How much more than the reference `config` spends beside the cache: the activation peak
    (in proportion to max_num_batched_tokens), CUDA graphs (in proportion to the capture sizes,
    where vLLM subtracts its estimate before sizing the cache)."""
    ref, change = cal.reference, 0.0
    if cal.activation_gib is not None and ref.max_num_batched_tokens:
        change += cal.activation_gib * (config.max_num_batched_tokens / ref.max_num_batched_tokens - 1)
    if cal.estimator_on and cal.cudagraph_gib is not None and captures(cal.cudagraph_config or ref):
        per_capture = cal.cudagraph_gib / captures(cal.cudagraph_config or ref)
        change += per_capture * (captures(config) - captures(ref))
    return change


#: NVML's total counts memory the driver keeps that vLLM's does not (memory_model.md 1.1: an
#: H100's 79.65 GiB against vLLM's 79.19): predictions on it claim this much more band
NVML_TOTAL_BAND = 0.03


def _whole(kv_gib: float, cal: Calibration) -> int:
    block_bytes = cal.bytes_per_token * cal.block_size
    # a hair over the floor: the per-token figure came from the same division, and a float
    # one ulp short must not lose a whole block
    return max(0, math.floor(kv_gib * GIB / block_bytes + 1e-6)) * cal.block_size


def predict(cal: Calibration, config: ServingConfig, errors: Sequence[float] = ()) -> KvPrediction:
    """The KV cache `config` would get on this deployment, and whether it would start."""
    if cal.bytes_per_token is None:
        return KvPrediction(reason="no start of this deployment printed its KV cache in tokens and memory")
    if config.kv_cache_memory_bytes:
        kv, why, resolution = config.kv_cache_memory_bytes / GIB, "kv_cache_memory_bytes sets it", 0.0
    elif cal.fixed_kv_gib is not None:
        # the environment sizes the cache whatever the config says: the tokens a start measured hold
        kv, why = cal.fixed_kv_gib, "an explicit size in the deployment's environment sets it"
        resolution = 0.0 if cal.fixed_tokens else PRINTED_GIB / max(kv, PRINTED_GIB)
        if cal.fixed_tokens:
            kv = cal.fixed_tokens * cal.bytes_per_token / GIB
    elif cal.reference is not None:
        ref, du = cal.reference, config.gpu_memory_utilization - cal.reference.gpu_memory_utilization
        if abs(du) > 1e-9 and cal.total_gib is None:
            return KvPrediction(reason="the device's total memory is unknown: no start printed it, none was "
                                       "measured at another utilization, and pre-flight recorded no NVML total")
        change = _overhead_change(cal, config)
        kv = cal.reference_kv_gib + (du * cal.total_gib if abs(du) > 1e-9 else 0.0) - change
        why = (f"{cal.reference_kv_gib:.2f} GiB at utilization {ref.gpu_memory_utilization:g}"
               + (f", {du:+.3g} x {cal.total_gib:.2f} GiB total ({cal.total_from})" if abs(du) > 1e-9 else "")
               + (f", {-change:+.2f} GiB beside the cache" if change else ""))
        resolution = cal.resolution * cal.reference_kv_gib / max(kv, 1e-9) if cal.reference_kv_gib > 0 else 0.0
        if abs(du) > 1e-9 and cal.total_from == "nvml":
            resolution += NVML_TOTAL_BAND
    else:
        return KvPrediction(reason="no start of this deployment sized its KV cache by utilization")
    band = band_of(errors, abs(resolution))
    if kv <= 0:
        return KvPrediction(kv_gib=round(kv, 4), kv_tokens=0, low_tokens=0, high_tokens=0, band=band, starts=False,
                            failure_kind="no_kv_cache_memory", reason=f"no memory left for the KV cache ({why})")
    tokens = _whole(kv, cal)
    low, high = _whole(kv * (1 - band), cal), _whole(kv * (1 + band), cal)
    need = config.max_model_len + cal.block_size  # one max-length request, beside the null block
    if low >= need:
        starts = True
    elif high < need:
        starts = False
    else:
        starts = None
    reason = f"{tokens} KV tokens (+/-{band:.0%}): {why}"
    kind = "max_model_len_exceeds_kv_cache" if starts is False else None
    budget = config.gpu_memory_utilization * cal.total_gib if cal.total_gib else None
    over = budget is not None and cal.free_gib is not None and budget > cal.free_gib * (1 + band)
    if over and not config.kv_cache_memory_bytes:
        starts, kind = False, "startup_free_memory_below_utilization"
        reason = f"{reason}; its {budget:.2f} GiB budget exceeds the {cal.free_gib:g} GiB free at the last start"
    elif starts is False:
        reason = f"{reason}; one request of {config.max_model_len} tokens does not fit"
    return KvPrediction(kv_gib=round(kv, 4), kv_tokens=tokens, low_tokens=low, high_tokens=high, band=round(band, 4),
                        starts=starts, failure_kind=kind, reason=reason)
