"""Seed fixes: the only per-kind Python logic of the observer.

Each function gets the numbers the rule extracted (plus context numbers from earlier lines),
the current config when the caller knows it, the actuator bounds and the safety buffer `b`,
and returns ``(fix, note)``: target values and a sentence saying how they were reached.

Conventions, all on the side of safety:

- the buffer shrinks what we take from a measurement we are fitting under (free memory,
  available KV) and grows what we must cover (a deficit, an allocation);
- rounding goes to the actuator grid in the safe direction (`Actuator.floor` when lowering,
  `Actuator.ceil` when raising);
- values are NOT clamped to the bounds: a fix that needs a value outside them must stay
  visible, so that the caller escalates instead of running a config that cannot work;
- an empty fix means "not computable from what the log and the caller told us": the
  finding then becomes an alert.
"""
from __future__ import annotations

import math
from typing import Callable

import msgspec

from schemas.actuators import ActuatorBounds
from schemas.serving import ServingConfig

_UTIL = "gpu_memory_utilization"


class FixInput(msgspec.Struct, frozen=True, kw_only=True):
    numbers: dict[str, float | int]
    groups: dict[str, str]
    current: ServingConfig | None
    bounds: ActuatorBounds
    buffer: float


FixResult = tuple[dict[str, float | int | bool], str]


def _utilization(inp: FixInput) -> tuple[float | None, str]:
    """The utilization the failing run used: as the log states it, else the caller's config."""
    stated = inp.numbers.get("requested_utilization")
    if stated is not None:
        return float(stated), "the log"
    if inp.current is not None:
        return float(inp.current.gpu_memory_utilization), "the current config"
    return None, ""


def _positive(*values) -> bool:
    return all(v is not None and math.isfinite(v) and v > 0 for v in values)


def lower_util_to_free(inp: FixInput) -> FixResult:
    """Free memory at startup is below the request: ask for (1 - b) of what is free."""
    free, total = inp.numbers.get("free_gib"), inp.numbers.get("total_gib")
    if not _positive(total) or free is None:
        return {}, "free or total memory missing from the message"
    act = inp.bounds.gpu_memory_utilization
    target = act.floor(free * (1 - inp.buffer) / total)
    return {_UTIL: target}, f"{free:g} of {total:g} GiB free; utilization keeps {inp.buffer:.0%} of it unused"


def fit_cpu_kv(inp: FixInput) -> FixResult:
    """CPU backend: KV = utilization x node total - the process's own memory must be > 0 and fit."""
    kv, budget, total = inp.numbers.get("requested_kv_gib"), inp.numbers.get("budget_gib"), inp.numbers.get("total_gib")
    free = inp.numbers.get("node_free_gib")
    if kv is None or budget is None or not _positive(total):
        return {}, "node memory or the KV request missing from the message"
    act = inp.bounds.gpu_memory_utilization
    process = budget - kv  # what the server already holds
    if kv <= 0:
        current = budget / total
        target = max(act.ceil(process * (1 + inp.buffer) / total), act.ceil(current + act.step * 1e-3))
        return {_UTIL: target}, (f"the budget {budget:g} GiB is below the server's own {process:.2f} GiB; "
                                 f"utilization covers that plus {inp.buffer:.0%}")
    if free is None:
        return {}, "free node memory missing from the message"
    target = act.floor((free * (1 - inp.buffer) + process) / total)
    return {_UTIL: target}, f"the KV request {kv:g} GiB exceeds the {free:g} GiB free on the node, less {inp.buffer:.0%}"


def raise_util_for_kv(inp: FixInput) -> FixResult:
    """No KV memory: raise utilization by the deficit plus the buffer, at least one step."""
    util, source = _utilization(inp)
    if util is None:
        return {}, "current utilization unknown: pass the current config"
    act = inp.bounds.gpu_memory_utilization
    one_step = act.ceil(util + act.step * 1e-3)
    available, total = inp.numbers.get("available_kv_gib"), inp.numbers.get("total_gib")
    if available is not None and _positive(total):
        deficit = max(0.0, -available)
        target = max(act.ceil(util + deficit * (1 + inp.buffer) / total), one_step)
        return {_UTIL: target}, (f"KV memory was {available:g} GiB of {total:g} GiB at utilization {util:g} "
                                 f"(from {source}); the deficit plus {inp.buffer:.0%}, at least one step")
    return {_UTIL: one_step}, f"deficit not stated in the log; one step up from {util:g} (from {source})"


def kv_max_model_len(inp: FixInput) -> FixResult:
    """max_model_len does not fit: vLLM's estimate, else derive one, rounded down to the grid."""
    act = inp.bounds.max_model_len
    n = inp.numbers
    if n.get("estimated_max_model_len") is not None:
        return {"max_model_len": act.floor(n["estimated_max_model_len"])}, "vLLM's estimated maximum model length"
    if n.get("kv_cache_tokens") is not None:
        # V0 states its exact capacity in tokens (block_size * blocks): a length up to it fits
        return {"max_model_len": act.floor(n["kv_cache_tokens"])}, "the KV cache capacity in tokens (V0 message)"
    needed, available, length = n.get("needed_kv_gib"), n.get("available_kv_gib"), n.get("max_model_len")
    if not _positive(needed, length) or available is None:
        return {}, "neither an estimate nor needed/available memory in the message"
    derived = available / needed * length * (1 - inp.buffer)
    why = ("estimate dropped by the vLLM 0.8.5-0.9.0 bug" if "dropped" in inp.groups
           else "vLLM printed no estimate")
    return ({"max_model_len": act.floor(derived)},
            f"{why}; derived from available/needed * max_model_len less {inp.buffer:.0%}")


def lower_seqs_warmup(inp: FixInput) -> FixResult:
    """Sampler/pooler warm-up OOM at N requests: halve N (at least the buffer).

    Warm-up memory grows linearly with N (logits are N x vocab, plus the sort buffers of
    top-k/top-p), and the failed allocation is only one of several live at the peak, so a cut by
    the buffer alone (10%) rarely clears it. Halving reaches a fitting value in few canaries;
    the tournament searches upward from there.
    """
    n = inp.numbers.get("max_num_seqs")
    if not _positive(n):
        return {}, "number of warm-up requests missing"
    act = inp.bounds.max_num_seqs
    return ({"max_num_seqs": act.floor(min(n * (1 - inp.buffer), n / 2))},
            f"half of the {n:g} warm-up requests")


def lower_util_for_alloc(inp: FixInput) -> FixResult:
    """A PyTorch OOM outside a known wrapper: free the failed allocation (plus buffer) from the KV
    budget by lowering utilization, at least one step."""
    util, source = _utilization(inp)
    if util is None:
        return {}, "current utilization unknown: pass the current config"
    act = inp.bounds.gpu_memory_utilization
    one_step = act.floor(util - act.step * 1e-3)
    alloc, total = inp.numbers.get("tried_to_allocate_mib"), inp.numbers.get("gpu_total_gib")
    if alloc is not None and _positive(total):
        need = alloc / 1024 * (1 + inp.buffer) / total
        return ({_UTIL: min(act.floor(util - need), one_step)},
                f"{alloc:g} MiB allocation plus {inp.buffer:.0%} taken from utilization {util:g} (from {source})")
    return {_UTIL: one_step}, f"allocation size unknown; one step down from {util:g} (from {source})"


def eager_or_lower_util(inp: FixInput) -> FixResult:
    """CUDA-graph OOM: eager mode needs no graph memory; where it is not allowed (or already on),
    fall back to lowering utilization."""
    already = inp.current is not None and inp.current.enforce_eager
    if inp.bounds.enforce_eager_allowed and not already:
        return {"enforce_eager": True}, "eager mode captures no CUDA graphs"
    fix, note = lower_util_for_alloc(inp)
    why = "eager mode already on" if already else "eager mode not allowed by the bounds"
    return fix, f"{why}; {note}"


def raise_mnbt_to_model_len(inp: FixInput) -> FixResult:
    length = inp.numbers.get("max_model_len")
    if not _positive(length):
        return {}, "max_model_len missing"
    return ({"max_num_batched_tokens": inp.bounds.max_num_batched_tokens.ceil(length)},
            "batch budget raised to cover one max_model_len prompt")


def raise_mnbt_to_seqs(inp: FixInput) -> FixResult:
    seqs = inp.numbers.get("max_num_seqs")
    if not _positive(seqs):
        return {}, "max_num_seqs missing"
    return ({"max_num_batched_tokens": inp.bounds.max_num_batched_tokens.ceil(seqs)},
            "batch budget raised to at least one token per sequence")


def lower_seqs_to_blocks(inp: FixInput) -> FixResult:
    blocks = inp.numbers.get("num_blocks")
    if blocks is None or not math.isfinite(blocks):
        return {}, "number of Mamba blocks missing"
    return {"max_num_seqs": inp.bounds.max_num_seqs.floor(blocks)}, "one Mamba cache block per sequence"


def lower_model_len_to_derived(inp: FixInput) -> FixResult:
    """vLLM accepts a length up to the larger of the derived length and model_max_length."""
    derived = inp.numbers.get("derived_max_model_len")
    if derived is None:
        return {}, "derived length missing"
    limit = max(derived, inp.numbers.get("model_max_length") or 0)
    return {"max_model_len": inp.bounds.max_model_len.floor(limit)}, "the model's own context length"


def _seqs_in_use(inp: FixInput) -> tuple[float | None, str]:
    """How many sequences the server ran: the fewer of the live count on the symptom line and the
    configured max_num_seqs (the scheduler can run fewer than allowed when the KV cache is full)."""
    known = []
    running = inp.numbers.get("requests_running")
    if _positive(running):
        known.append((running, "requests running at the time"))
    if inp.current is not None and _positive(inp.current.max_num_seqs):
        known.append((inp.current.max_num_seqs, "the current config's max_num_seqs"))
    return min(known) if known else (None, "")


def lower_seqs_for_pressure(inp: FixInput) -> FixResult:
    """Preemptions or a full KV cache at runtime: admit fewer sequences, so that those admitted
    keep their KV blocks. One step or the buffer below what ran, whichever is lower."""
    base, source = _seqs_in_use(inp)
    if base is None:
        return {}, "neither the running requests nor the current max_num_seqs known"
    act = inp.bounds.max_num_seqs
    target = act.floor(min(base - act.step, base * (1 - inp.buffer)))
    return {"max_num_seqs": target}, f"one step or {inp.buffer:.0%} below {base:g} ({source})"


def raise_seqs_for_queue(inp: FixInput) -> FixResult:
    """A queue that keeps growing: more sequences at once, but only when that is known to help
    and to fit, i.e. the current config is known, every sequence slot is in use and the KV cache
    has room to spare (usage below 1 - buffer). Otherwise an alert: the load may simply exceed
    what this GPU can serve, which no parameter fixes."""
    if inp.current is None:
        return {}, "current max_num_seqs unknown: pass the current config"
    seqs = inp.current.max_num_seqs
    running, kv = inp.numbers.get("requests_running"), inp.numbers.get("kv_cache_utilization")
    if kv is None:
        return {}, "KV cache usage unknown: more sequences might not fit"
    if kv >= 1 - inp.buffer:
        return {}, f"KV cache {kv:.0%} used: more sequences would be preempted"
    if running is not None and running < seqs:
        return {}, f"only {running:g} of {seqs} sequence slots in use: max_num_seqs is not what holds the queue"
    act = inp.bounds.max_num_seqs
    target = act.ceil(max(seqs + act.step, seqs * (1 + inp.buffer)))
    return {"max_num_seqs": target}, f"all {seqs} sequence slots in use with the KV cache {kv:.0%} used; one step or {inp.buffer:.0%} up"


def alert(inp: FixInput) -> FixResult:
    return {}, ""


FIXES: dict[str, Callable[[FixInput], FixResult]] = {
    f.__name__: f
    for f in (lower_util_to_free, fit_cpu_kv, raise_util_for_kv, kv_max_model_len, lower_seqs_warmup, lower_util_for_alloc,
              eager_or_lower_util, raise_mnbt_to_model_len, raise_mnbt_to_seqs, lower_seqs_to_blocks,
              lower_model_len_to_derived, lower_seqs_for_pressure, raise_seqs_for_queue, alert)
}


def compute(name: str, inp: FixInput) -> FixResult:
    """Run fix `name`; a fix that is not a finite number is dropped (never proposed)."""
    try:
        fix, note = FIXES[name](inp)
    except (ArithmeticError, ValueError, OverflowError) as exc:  # e.g. absurd numbers in a mangled log
        return {}, f"fix not computable: {exc}"
    clean = {k: v for k, v in fix.items() if isinstance(v, bool) or math.isfinite(v)}
    return clean, note
