"""The load phase: a deterministic step-by-step model of vLLM V1's scheduler (memory_model.md §4).

Each engine step packs the running requests first (a decode costs one token of the
`max_num_batched_tokens` budget, an unfinished prefill takes a chunk of what is left), then
admits waiting requests while fewer than `max_num_seqs` run and KV blocks allow. A request that
needs a block when none is free preempts the most recently admitted request, which is freed and
later recomputed from scratch (RECOMPUTE, §1.9; F7). The step time is the roofline of §4 (roofline.py).

Steady decoding is stepped in one stride: while every running request only decodes, none is
about to finish, none can be admitted and no block runs short, each step's cost depends only
on the step number, so `_decode_stride` computes those steps without visiting each request
per step. It takes the same steps in the same order (the same floats, the same samples);
`run_load(..., stride=False)` is the plain step-by-step loop, and tests/sim hold the two equal.

Workload: `concurrent_users` clients each send a request, wait for it, send the next, until
`requests` have been sent (closed loop, like `vllm bench serve --max-concurrency`). Prompt
lengths spread over 0.5x..1.5x of the mean by a golden-ratio sequence, so runs are
deterministic without a random generator. The workload is production's: a request longer than
the candidate's max_model_len is refused by the server (HTTP 400) and fails the load phase,
because a config that cannot serve what production sends is no fix.
"""
from __future__ import annotations

import bisect
import math
from collections import deque

import msgspec

from selfheal.handlers.models.memory import BLOCK_SIZE, Startup, gib, request_blocks, window_blocks
from selfheal.handlers.models.roofline import PerfModel, perf_model
from selfheal.schemas.failures import FailureKind
from selfheal.schemas.scenario import Cotenant, Scenario
from selfheal.schemas.serving import ServingConfig

#: vLLM's stats logger interval (V1 `loggers.py`)
STATS_INTERVAL_S = 10.0
_GOLDEN = (math.sqrt(5) - 1) / 2


class StatsSample(msgspec.Struct, frozen=True, kw_only=True):
    """One "Engine 000: Avg prompt throughput ..." line (V1 stats logger)."""
    t: float
    prompt_tps: float
    generation_tps: float
    running: int
    waiting: int
    kv_usage: float
    preemptions: int      # in this interval


class CotenantOom(msgspec.Struct, frozen=True, kw_only=True):
    """F8: a co-tenant grows past what vLLM left on its GPU."""
    t: float
    cotenant: Cotenant
    gpu: int
    tried: int            # bytes it could not get
    free: int             # bytes free on the device at that moment
    vllm_bytes: int       # vLLM's footprint on that GPU
    others: list[tuple[int, int]]   # (pid, bytes) of the other co-tenants there


class Load(msgspec.Struct, frozen=True, kw_only=True):
    passed: bool
    failure_kind: FailureKind | None  # "preemption_storm" | "cotenant_oom" | "requests_rejected" | None
    completed: int
    duration_s: float
    throughput_tok_s: float
    requests_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    itl_p50_ms: float
    preemptions: int
    rejected_requests: int            # longer than max_model_len: refused with HTTP 400
    peak_kv_usage: float
    prompt_tokens: int                # prompt tokens of the requests (not counting recompute)
    generation_tokens: int
    finishes: list[tuple[float, int]]  # (time, user) of each completed request, in order
    rejections: list[tuple[float, int]]  # (time, user) of each refused request
    stats: list[StatsSample]
    cotenant_oom: CotenantOom | None


class _Req:
    __slots__ = ("user", "prompt", "out", "arrival", "computed", "generated", "blocks", "first", "finish")

    def __init__(self, user: int, prompt: int, out: int, arrival: float):
        self.user, self.prompt, self.out, self.arrival = user, prompt, out, arrival
        self.computed = self.generated = self.blocks = 0
        self.first: float | None = None
        self.finish = 0.0


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def prompt_lengths(scenario: Scenario) -> list[tuple[int, int]]:
    """[(prompt, output)] of every request, in the order they are sent."""
    w = scenario.workload
    return [(max(1, round(w.prompt_tokens * (0.5 + (i * _GOLDEN) % 1.0))), w.output_tokens)
            for i in range(w.requests)]


def _usage(usable: int, free: int) -> float:
    """KV cache usage as vLLM reports it: blocks in use over usable blocks."""
    return (usable - free) / usable if usable > 0 else 1.0


def _sample(at: float, iv_prompt: int, iv_gen: int, running: int, waiting: int, used: int, iv_pre: int,
            usable: int) -> StatsSample:
    """The stats logger's line at `at`, from the interval's counters and the blocks in use."""
    return StatsSample(t=at, prompt_tps=iv_prompt / STATS_INTERVAL_S, generation_tps=iv_gen / STATS_INTERVAL_S,
                       running=running, waiting=waiting, kv_usage=_usage(usable, usable - used), preemptions=iv_pre)


class _Clock(msgspec.Struct):
    """What a stride advances besides the requests: time, free blocks, the stats interval."""
    t: float
    free: int
    peak_used: int
    constrained: bool
    next_stats: float
    iv_prompt: int
    iv_gen: int
    iv_pre: int


def _decode_stride(running: list[_Req], waiting_count: int, clock: _Clock, perf: PerfModel, usable: int,
                   stats: list[tuple]) -> None:
    """Take every step of steady decoding up to (not including) the first that finishes a
    request or would need more blocks than are free; the caller has checked that every
    running request decodes and that nothing can be admitted. Each step's time is summed
    exactly as `PerfModel.step_s` sums it, so the floats are the plain loop's."""
    n = len(running)
    steps = min(r.out - r.generated for r in running) - 1   # the step that finishes one is a plain step
    if steps <= 0:
        return
    # a request needs a new block on the step that starts at a multiple of BLOCK_SIZE computed tokens
    crossing = [0] * BLOCK_SIZE
    for r in running:
        crossing[r.computed % BLOCK_SIZE] += 1
    context0 = sum(r.computed for r in running)
    # PerfModel.step_from inlined, its operations in its order: the same floats, no call per step
    head, compute, eager, allreduce = perf.terms(n)
    kv_bytes, bandwidth = perf.kv_bytes_per_token, perf.bandwidth
    t, free, next_stats, counted = clock.t, clock.free, clock.next_stats, 0
    taken = 0
    for j in range(1, steps + 1):
        need = crossing[(1 - j) % BLOCK_SIZE]
        if need > free:
            clock.constrained = True
            break                                    # this step preempts: leave it to the plain loop
        free -= need
        t += head + (context0 + n * j) * kv_bytes / bandwidth + compute + eager + allreduce
        taken = j
        if t >= next_stats:
            clock.iv_gen += n * (j - counted)
            counted = j
            while t >= next_stats:
                stats.append((next_stats, clock.iv_prompt, clock.iv_gen, n, waiting_count, usable - free,
                              clock.iv_pre))
                next_stats += STATS_INTERVAL_S
                clock.iv_prompt = clock.iv_gen = clock.iv_pre = 0
    if not taken:
        return
    clock.iv_gen += n * (taken - counted)
    clock.t, clock.free, clock.next_stats = t, free, next_stats
    # usage only grows during the stride: its peak is where the stride ends
    clock.peak_used = max(clock.peak_used, usable - free)
    for r in running:
        r.computed += taken
        r.generated += taken
        r.blocks = _cdiv(r.computed, BLOCK_SIZE)


class Schedule(msgspec.Struct, frozen=True, kw_only=True):
    """The engine's steps for a whole workload, before they are summed up into a Load.

    Blocks are counted as in use, not as free, so that one schedule serves every cache size
    it never ran short in: `constrained` says some allocation found too few free blocks
    (a preemption, a postponed admission, a stall); if not, the same steps happen with any
    cache of at least `peak_used` blocks. What the requests measured is summed up here, once
    per schedule, not per Load made from it."""
    completed: int
    prompt_tokens: int                 # of the completed requests (not counting recompute)
    generation_tokens: int
    latency_p50_ms: float
    latency_p99_ms: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    itl_p50_ms: float
    finishes: list[tuple[float, int]]
    rejections: list[tuple[float, int]]
    stats: list[tuple]            # _sample's arguments but `usable`
    preemptions: int
    peak_used: int | None         # None: no step was taken
    duration: float
    stalled: bool
    constrained: bool

    def fits(self, usable: int) -> bool:
        return not self.constrained and usable > 0 and (self.peak_used or 0) <= usable


class LoadMemo:
    """The schedules of past load phases of one scenario, by what the scheduler reads.

    A climb tries many neighbouring configs whose loads differ only where the scheduler
    cannot see it: a max_model_len that refuses the same requests, a KV cache that never runs
    short at either size. A predictor keeps one memo and schedules each distinct load once.
    Bounded: when full it forgets everything, which costs a recomputation, never an answer."""

    def __init__(self, scenario: Scenario, limit: int = 1024):
        self.scenario, self.limit = scenario, limit
        self._totals = sorted(p + o for p, o in prompt_lengths(scenario))
        self._schedules: dict[tuple, list[tuple[int, Schedule]]] = {}
        self._size = 0
        self.hits = self.misses = 0

    def schedule(self, config: ServingConfig, startup: Startup, stride: bool) -> Schedule:
        # the requests max_model_len refuses are those longer than it: how many it serves says which
        served = bisect.bisect_right(self._totals, config.max_model_len)
        key = (config.max_num_seqs, config.max_num_batched_tokens, served, config.enforce_eager,
               startup.kv_bytes_per_token, stride)
        usable = startup.num_blocks - 1
        known = self._schedules.setdefault(key, [])
        for size, found in known:
            if size == usable or found.fits(usable):
                self.hits += 1
                return found
        self.misses += 1
        if self._size >= self.limit:
            self._schedules.clear()
            self._size = 0
            known = self._schedules[key] = []
        found = _schedule(self.scenario, config, startup, stride)
        known.append((usable, found))
        self._size += 1
        return found


def run_load(scenario: Scenario, config: ServingConfig, startup: Startup, *, stride: bool = True,
             memo: LoadMemo | None = None) -> Load:
    """Replay the scenario's workload against a started engine; deterministic.

    `stride=False` steps every decode one by one (the reference the stride is tested against).
    `memo`, for this scenario, reuses the schedule of an earlier load that steps the same way."""
    if memo is not None and memo.scenario is not scenario:
        raise ValueError(f"a LoadMemo of scenario {memo.scenario.name!r} used for {scenario.name!r}")
    schedule = (_schedule(scenario, config, startup, stride) if memo is None
                else memo.schedule(config, startup, stride))
    return _summarise(scenario, startup, schedule)


def _schedule(scenario: Scenario, config: ServingConfig, startup: Startup, stride: bool) -> Schedule:
    """Step the engine through the whole workload. What it reads of `config` and `startup`
    is what LoadMemo keys on; keep the two in step."""
    perf = perf_model(scenario, config, startup.kv_bytes_per_token)
    usable = startup.num_blocks - 1          # block 0 is the null block (§1.5)
    if window_blocks(scenario, config) is None:
        def blocks(tokens: int) -> int:
            return _cdiv(tokens, BLOCK_SIZE)
    else:
        # sliding layers stop growing at the window: a request's blocks are no longer one per
        # BLOCK_SIZE tokens, which the decode stride's arithmetic assumes, so it steps plainly
        stride = False

        def blocks(tokens: int) -> int:
            return request_blocks(scenario, config, tokens)
    lengths = prompt_lengths(scenario)
    wl = scenario.workload
    total = len(lengths)

    t, issued, free = 0.0, 0, usable
    waiting: deque[_Req] = deque()
    running: list[_Req] = []
    done: list[_Req] = []
    finishes: list[tuple[float, int]] = []
    rejections: list[tuple[float, int]] = []
    preemptions = 0
    stats: list[tuple] = []                  # _sample's arguments but `usable`
    next_stats, iv_prompt, iv_gen, iv_pre = STATS_INTERVAL_S, 0, 0, 0
    peak_used, stepped = 0, False
    constrained = stalled = False            # constrained: some allocation found too few free blocks

    def issue(user: int, at: float) -> None:
        nonlocal issued
        while issued < total:
            p, o = lengths[issued]
            issued += 1
            if p + o > config.max_model_len:       # vLLM refuses it at once; the client sends the next
                rejections.append((at, user))
                continue
            waiting.append(_Req(user, p, o, at))
            return

    for user in range(min(wl.concurrent_users, total)):
        issue(user, 0.0)

    while waiting or running:
        if (stride and running and len(running) <= config.max_num_batched_tokens
                and (not waiting or len(running) >= config.max_num_seqs)
                and all(r.generated > 0 and r.computed == r.prompt + r.generated - 1 for r in running)):
            clock = _Clock(t=t, free=free, peak_used=peak_used, constrained=constrained, next_stats=next_stats,
                           iv_prompt=iv_prompt, iv_gen=iv_gen, iv_pre=iv_pre)
            _decode_stride(running, len(waiting), clock, perf, usable, stats)
            t, free, next_stats = clock.t, clock.free, clock.next_stats
            peak_used, constrained = clock.peak_used, clock.constrained
            iv_prompt, iv_gen, iv_pre = clock.iv_prompt, clock.iv_gen, clock.iv_pre
        budget = config.max_num_batched_tokens
        sched: list[tuple[_Req, int]] = []
        preempted = False
        i = 0
        while i < len(running) and budget > 0:
            r = running[i]
            ntok = min(r.prompt + r.generated - r.computed, budget)
            need = blocks(r.computed + ntok) - r.blocks
            self_preempted = False
            while need > free:
                constrained = True
                victim = running.pop()          # the latest admitted goes first (FCFS)
                free += victim.blocks
                victim.blocks = victim.computed = 0
                waiting.appendleft(victim)
                preemptions += 1
                iv_pre += 1
                preempted = True
                if victim is r:
                    self_preempted = True
                    break
            if self_preempted:
                break
            r.blocks += need
            free -= need
            sched.append((r, ntok))
            budget -= ntok
            i += 1
        if not preempted:                       # V1 admits nothing in a step that preempted
            while waiting and len(running) < config.max_num_seqs and budget > 0:
                r = waiting[0]
                ntok = min(r.prompt + r.generated - r.computed, budget)
                need = blocks(ntok)
                if need > free:
                    constrained = True
                    break
                waiting.popleft()
                running.append(r)
                r.blocks, free = need, free - need
                sched.append((r, ntok))
                budget -= ntok
        if not sched:
            # only when one request alone needs more blocks than the whole cache holds
            stalled = constrained = True
            break

        tokens = sum(n for _, n in sched)
        context = sum(r.computed + n for r, n in sched)
        t += perf.step_s(tokens, context)
        peak_used, stepped = max(peak_used, usable - free), True
        for r, n in sched:
            decode = r.generated > 0 and n == 1 and r.computed == r.prompt + r.generated - 1
            if not decode:
                iv_prompt += n
            r.computed += n
            if r.computed == r.prompt + r.generated:
                r.generated += 1
                iv_gen += 1
                if r.first is None:
                    r.first = t
                if r.generated == r.out:
                    r.finish = t
                    running.remove(r)
                    free += r.blocks
                    r.blocks = 0
                    done.append(r)
                    finishes.append((t, r.user))
                    issue(r.user, t)
        while t >= next_stats:
            stats.append((next_stats, iv_prompt, iv_gen, len(running), len(waiting), usable - free, iv_pre))
            next_stats += STATS_INTERVAL_S
            iv_prompt = iv_gen = iv_pre = 0

    latencies = sorted((r.finish - r.arrival) * 1e3 for r in done)
    ttfts = sorted(((r.first or r.finish) - r.arrival) * 1e3 for r in done)
    itls = sorted((r.finish - (r.first or r.finish)) * 1e3 / (r.out - 1) for r in done if r.out > 1)
    return Schedule(
        completed=len(done), prompt_tokens=sum(r.prompt for r in done), generation_tokens=sum(r.generated for r in done),
        latency_p50_ms=_pct(latencies, 50), latency_p99_ms=_pct(latencies, 99), ttft_p50_ms=_pct(ttfts, 50),
        ttft_p99_ms=_pct(ttfts, 99), itl_p50_ms=_pct(itls, 50),
        finishes=finishes, rejections=rejections, stats=stats, preemptions=preemptions,
        peak_used=peak_used if stepped else None, duration=t, stalled=stalled, constrained=constrained)


def _summarise(scenario: Scenario, startup: Startup, schedule: Schedule) -> Load:
    usable = startup.num_blocks - 1
    finishes, rejections = list(schedule.finishes), list(schedule.rejections)
    duration, preemptions = schedule.duration, schedule.preemptions
    # usage is used/usable, and division keeps order: the peak usage is the peak use's
    peak_usage = 0.0 if schedule.peak_used is None else _usage(usable, usable - schedule.peak_used)
    stats = [_sample(*sample, usable) for sample in schedule.stats]
    n, gen = schedule.completed, schedule.generation_tokens
    oom = _cotenant_oom(scenario, startup, finishes[len(finishes) // 2][0] if finishes else 0.0)
    failure = None
    if oom is not None:
        failure = "cotenant_oom"               # another service died: worse than refused or slow requests
    elif rejections:
        failure = "requests_rejected"
    elif schedule.stalled or preemptions > scenario.workload.max_preemption_ratio * scenario.workload.requests:
        failure = "preemption_storm"
    return Load(
        passed=failure is None, failure_kind=failure, completed=n, duration_s=duration,
        throughput_tok_s=gen / duration if duration else 0.0,
        requests_per_s=n / duration if duration else 0.0,
        latency_p50_ms=schedule.latency_p50_ms, latency_p99_ms=schedule.latency_p99_ms,
        ttft_p50_ms=schedule.ttft_p50_ms, ttft_p99_ms=schedule.ttft_p99_ms, itl_p50_ms=schedule.itl_p50_ms,
        preemptions=preemptions, rejected_requests=len(rejections), peak_kv_usage=peak_usage,
        prompt_tokens=schedule.prompt_tokens, generation_tokens=gen,
        finishes=finishes, rejections=rejections, stats=stats, cotenant_oom=oom,
    )


def _pct(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile (deterministic, always one of the values)."""
    if not sorted_values:
        return 0.0
    return sorted_values[max(0, math.ceil(p / 100 * len(sorted_values)) - 1)]


def _cotenant_oom(scenario: Scenario, startup: Startup, at: float) -> CotenantOom | None:
    """F8: co-tenants grow (in pid order) into what vLLM left; the first that cannot, OOMs."""
    for w in startup.workers:
        room = w.slack
        for c in scenario.cotenants_on(w.rank):
            growth = gib(c.growth_gib)
            if growth > room:
                vllm = startup.footprint(w)
                others = [(o.pid, gib(o.peak_gib if o.peak_gib is not None and o.pid < c.pid else o.used_gib))
                          for o in scenario.cotenants_on(w.rank) if o.pid != c.pid]
                return CotenantOom(t=at, cotenant=c, gpu=w.rank, tried=growth, free=max(0, room), vllm_bytes=vllm,
                                   others=others)
            room -= growth
    return None


__all__ = ["Load", "LoadMemo", "Schedule", "StatsSample", "CotenantOom", "prompt_lengths", "run_load"]
