"""What a real vLLM canary measures beyond its requests: headroom, a warm start, and the
production symptoms its /metrics showed under load (issue 15, points 4 and 9).

Headroom (`read_headroom`): the memory the canary's server leaves for everything else on its
device, from what the server itself prints at startup; the source is returned beside the figure:
- GPU worker (vllm/v1/worker/gpu_worker.py, 0.2x-0.32): "Free memory on device (F/T GiB) on
  startup. Desired GPU memory utilization is (u, R GiB)": headroom = F - R, the memory vLLM
  leaves unrequested of what was free when it started (its own `unrequested_memory`);
- GPU worker with --kv-cache-memory-bytes: "Initial free memory F GiB, reserved K GiB memory for
  KV Cache": F - K, an upper bound (that line names no non-KV memory);
- CPU worker (vllm/v1/worker/cpu_worker.py, `determine_available_memory`): "Auto set (K/T) GiB
  for KV cache on node N, with R GiB requested memory for the worker" (utilization x node total)
  or "Explicitly set (K/T) GiB for KV cache" (VLLM_CPU_KVCACHE_SPACE, --kv-cache-memory-bytes).
  vLLM prints no free memory on success there, so the node's available memory is read from
  /proc/meminfo just before the canary starts (what vLLM's own check reads, psutil's
  `available`), less what the server took: R, or K, or its peak resident memory, whichever is
  larger (a worker's RSS beyond its request is memory others lack too).

Warm start (`compile_cache_state`): vLLM's torch.compile cache lives under VLLM_CACHE_ROOT
(default ~/.cache/vllm): `torch_compile_cache/<hash>/rank_R_D/<prefix>` (compilation/backends.py)
or, with VLLM_USE_AOT_COMPILE, `torch_compile_cache/torch_aot_compile/<hash>` (decorators.py).
The hash covers vLLM's version, the model and the compile-relevant config (max_num_seqs and
max_num_batched_tokens are in it; gpu_memory_utilization, kv_cache_memory_bytes and
enforce_eager are not, config/cache.py and config/model.py `compute_hash`), so a canary that
shares production's VLLM_CACHE_ROOT starts warm when only those settings differ. The CPU build
(platforms/cpu.py: DYNAMO_TRACE_ONCE, inductor) compiles AOT there too and points
TORCHINDUCTOR_CACHE_DIR into that hash's folder itself, so VLLM_CACHE_ROOT is all there is to
share. The log says which happened: "Directly load the compiled graph(s) ... from the cache" /
"Directly load AOT compilation" (warm) against "Compiling a graph for compile range ... takes" /
"saved AOT compiled function" (cold); enforce_eager compiles nothing (neither). Measured on the CPU
build (tests/realvllm/test_real_canary_warm.py): its AOT artifact fails to load, and the compile
it does again reads inductor's cache in the shared folder, which still cuts the engine's init.
VLLM_ENABLE_STARTUP_PLAN is left alone: it skips the memory profiling whose result (KV tokens)
the canary exists to measure.

Production's symptoms (`LoadWatch`, `watcher_symptoms`): /metrics is scraped all through the load
phase; the load phase is taken as one pass of production's traffic, repeated back to back for as
long as production's watcher (edges/metrics_watch.py, default thresholds) needs to judge, exactly
as the simulator judges its canaries (edges/sim/metrics.py); a line it reports fails the canary.
"""
from __future__ import annotations

import math
import random
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

from selfheal.edges.metrics_watch import MetricsWatch, Scrape
from selfheal.edges.sim.metrics import judging_span_s
from selfheal.handlers.models.serving import STATS_INTERVAL_S

_GPU_FREE = re.compile(r"Free memory on device \(([\d.]+)/[\d.]+ GiB\) on startup\. Desired GPU memory "
                       r"utilization is \([\d.]+, ([\d.]+) GiB\)")
_GPU_EXPLICIT = re.compile(r"Initial free memory ([\d.]+) GiB, reserved ([\d.]+) GiB memory for KV Cache")
_CPU_AUTO = re.compile(r"Auto set \(([\d.]+)/[\d.]+\) GiB for KV cache on node \d+, with ([\d.]+) GiB requested")
_CPU_EXPLICIT = re.compile(r"Explicitly set \(([\d.]+)/[\d.]+\) GiB for KV cache")
_WARM = re.compile(r"Directly load the compiled graph\(s\) for .* from the cache|Directly load AOT compilation"
                   # 0.32's CPU build finds the AOT artifact but cannot load it ("'function' object has no
                   # attribute 'finalize_loading'") and compiles again, from the inductor cache in that folder
                   r"|Compiling model again due to a load failure from ")
_COLD = re.compile(r"Compiling a graph for (?:compile range|dynamic shape)|saved AOT compiled function")
_GIB = 1 << 30


# --- what vLLM prints and serves (vllm_backend.py exports these too) ---------------------------

_SAMPLE = re.compile(r'^([a-zA-Z_:][\w:]*)(\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\})?\s+(\S+)')
_KV_TOKENS = re.compile(r"\b\w+ KV cache size: ([\d,]+) tokens")   # GPU / CPU / XPU ..., also 0.33's merged line
_CONCURRENCY = re.compile(r"Maximum concurrency for [\d,]+ tokens per request: ([\d.]+)x")
# GPU workers; the CPU worker (0.32) says "Auto set (0.63/8.34) GiB for KV cache on node 0"
_AVAILABLE_KV = re.compile(r"Available KV cache memory: ([\d.]+) ?GiB|Auto set \(([\d.]+)/[\d.]+\) GiB for KV cache")


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {metric name: value}, label sets combined: summed, except `*_perc`
    gauges (a usage fraction per engine), where the highest is kept."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m is None:          # comments, blank lines
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        name = m.group(1)
        out[name] = max(out.get(name, value), value) if name.endswith("_perc") else out.get(name, 0.0) + value
    return out


def vllm_metrics(parsed: dict[str, float]) -> dict[str, float]:
    """The vLLM counters selfheal reads, under stable names, across metric renames."""
    def first(*names: str) -> float:
        return next((parsed[n] for n in names if n in parsed), 0.0)
    return {"preemptions": first("vllm:num_preemptions_total", "vllm:num_preemptions"),
            "kv_cache_usage": first("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
            "waiting": first("vllm:num_requests_waiting"), "running": first("vllm:num_requests_running"),
            "prompt_tokens": first("vllm:prompt_tokens_total"),
            "generation_tokens": first("vllm:generation_tokens_total")}


def read_capacity(log_text: str) -> tuple[int, float, float]:
    """(KV cache tokens, maximum concurrency, available KV GiB) from vLLM's startup log; 0 where absent."""
    kv = [int(x.replace(",", "")) for x in _KV_TOKENS.findall(log_text)]
    conc = [float(x) for x in _CONCURRENCY.findall(log_text)]
    avail = [float(gpu or cpu) for gpu, cpu in _AVAILABLE_KV.findall(log_text)]
    return min(kv, default=0), min(conc, default=0.0), min(avail, default=0.0)


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); 0 for no values."""
    if not values:
        return 0.0
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)



# --- headroom and warm starts ------------------------------------------------------------------

def host_available_gib(meminfo: Path = Path("/proc/meminfo")) -> float | None:
    """MemAvailable of /proc/meminfo in GiB (None where it cannot be read)."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 / _GIB
    except (OSError, ValueError, IndexError):
        pass
    return None


def read_headroom(log_text: str, available_before_gib: float | None, peak_rss_gib: float) -> tuple[float, str]:
    """(headroom GiB, source) from the server's startup lines (module doc); (0, "") where none is printed.
    With several workers the smallest headroom counts, as the simulator's minimum over GPUs."""
    gpu = [float(free) - float(req) for free, req in _GPU_FREE.findall(log_text)]
    if gpu:
        return round(max(0.0, min(gpu)), 4), "vLLM startup: free memory on device - requested memory"
    explicit = [float(free) - float(kv) for free, kv in _GPU_EXPLICIT.findall(log_text)]
    if explicit:
        return round(max(0.0, min(explicit)), 4), "vLLM startup: initial free memory - explicit KV cache memory"
    if available_before_gib is None:
        return 0.0, ""
    taken = [max(float(req), float(kv)) for kv, req in _CPU_AUTO.findall(log_text)]
    source = "host MemAvailable before the canary - vLLM CPU worker's requested memory (or its peak RSS)"
    if not taken:
        taken = [float(kv) for kv in _CPU_EXPLICIT.findall(log_text)]
        source = "host MemAvailable before the canary - vLLM CPU worker's explicit KV space (or its peak RSS)"
    if not taken:
        return 0.0, ""
    return round(max(0.0, available_before_gib - max(max(taken), peak_rss_gib)), 4), source


def compile_cache_state(log_text: str) -> bool | None:
    """True: the server loaded its compiled graphs from the cache; False: it compiled them;
    None: it compiled nothing (enforce_eager) or did not get that far."""
    if _WARM.search(log_text):
        return True    # found in the cache (a recompile after a failed load still reads inductor's cache there)
    return False if _COLD.search(log_text) else None


class LoadWatch(threading.Thread):
    """Scrapes /metrics every `period_s` from construction until `stop()`: the load phase's timeline,
    times relative to the start. `scrape` returns the body, or None when the scrape failed."""

    def __init__(self, scrape: Callable[[], str | None], period_s: float = 0.5):
        super().__init__(name="canary-metrics", daemon=True)
        self._scrape, self.period_s, self.t0 = scrape, period_s, time.monotonic()
        self.samples: list[Scrape] = []
        self._done = threading.Event()
        self._reader = MetricsWatch()
        self.take()    # the counters before the first request: the pass's baseline
        self.start()

    def run(self) -> None:
        while not self._done.wait(self.period_s):
            self.take()

    def take(self) -> None:
        now = time.monotonic() - self.t0
        body = self._scrape()
        if body is not None:
            # the watcher's own reading of a scrape: the same metric names and label sums it judges
            self.samples.append(self._reader._read(body, now))

    def stop(self) -> list[Scrape]:
        """Stop scraping, take a last scrape (the counters after the load), return the timeline."""
        self._done.set()
        self.join()
        self.take()
        return self.samples


def _delta(a: float | None, b: float | None) -> float:
    return max(0.0, (b or 0.0) - (a or 0.0))


def summary(samples: list[Scrape], kv_threshold: float) -> dict[str, float]:
    """The load phase's symptom figures from its timeline: peak KV usage, the share of scrapes at or
    above the watcher's KV threshold, the longest queue, and the rise of the refusal counter."""
    kv = [s.kv for s in samples if s.kv is not None and math.isfinite(s.kv)]
    return {"peak_kv_usage": round(max(kv, default=0.0), 4),
            "kv_full_share": round(sum(k >= kv_threshold for k in kv) / len(kv), 4) if kv else 0.0,
            "peak_waiting": max((int(s.waiting) for s in samples if s.waiting is not None), default=0),
            "refused": _delta(samples[0].refused, samples[-1].refused) if samples else 0.0}


def _at(samples: list[Scrape], times: list[float], local: float) -> Scrape:
    """The sample in force at `local` seconds into the pass."""
    return samples[max(0, sum(x <= local for x in times) - 1)]


def watcher_symptoms(samples: list[Scrape], watch: MetricsWatch | None = None) -> list[str]:
    """What production's watcher would report of this load served back to back: the pass's timeline
    repeated over the span the watcher needs, scraped every stats interval (edges/sim/metrics.py's
    `scrapes`, with measured samples in place of simulated ones). Empty for no timeline."""
    watch = watch or MetricsWatch()
    first, last = (samples[0], samples[-1]) if samples else (None, None)
    duration_s = last.t - first.t if samples else 0.0   # one pass: from the baseline to the settled counters
    if duration_s <= 0:
        return []
    per_pass = {f: _delta(getattr(first, f), getattr(last, f)) for f in ("preemptions", "refused")}
    times = [s.t - first.t for s in samples]
    found, t, phases = [], STATS_INTERVAL_S, random.Random(0)
    while t <= judging_span_s(watch) + 1e-9:
        k, local = divmod(t, duration_s)
        s = _at(samples, times, local)
        # gauges at any moment of the pass, as production's scrapes fall unrelated to its traffic: a
        # seeded draw (the same timeline gets the same verdict), since a pass that divides the scrape
        # interval would otherwise show the watcher one moment of it, scrape after scrape. Counters
        # keep the true time, so they never go down (the watcher takes that for a restart)
        g = _at(samples, times, phases.random() * duration_s)
        counters = {f: (k * per_pass[f] + _delta(getattr(first, f), getattr(s, f))
                        if getattr(s, f) is not None else None) for f in per_pass}
        line = watch.feed_scrape(Scrape(t=t, running=g.running, waiting=g.waiting, kv=g.kv, kv_name=g.kv_name,
                                        **counters))
        if line:
            found.append(line)
        t += STATS_INTERVAL_S
    return found
