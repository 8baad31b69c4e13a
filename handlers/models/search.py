"""The tournament's search space: which actuators a failure makes worth moving, every config
around production within the bounds, and a climb on a predictor (one actuator, then pairs).

Pure: configs and bounds in, configs out; the predictor is any function of a config. The
tournament reactor (handlers/tournament.py) decides with it and records what it decided.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Callable

from selfheal.schemas.actuators import ActuatorBounds
from selfheal.schemas.failures import FailureKind
from selfheal.schemas.serving import ServingConfig

#: the actuators worth searching for each failure kind, most relevant first. No KV memory at
#: all: more utilization usually leaves too little for one max_model_len request (F5), so the
#: context comes with it. A KV cache too small for the admitted load: the batch budget sets how
#: many steps a prompt's prefill takes, i.e. how long each request holds its KV blocks
RELEVANT: dict[FailureKind, tuple[str, ...]] = {
    "startup_free_memory_below_utilization": ("gpu_memory_utilization", "max_model_len", "max_num_seqs"),
    "no_kv_cache_memory": ("gpu_memory_utilization", "max_num_seqs", "max_num_batched_tokens", "max_model_len",
                           "enforce_eager"),
    "max_model_len_exceeds_kv_cache": ("max_model_len", "gpu_memory_utilization", "enforce_eager"),
    "cuda_oom_allocation": ("max_num_seqs", "gpu_memory_utilization", "max_num_batched_tokens"),
    "cuda_graph_oom": ("enforce_eager", "gpu_memory_utilization", "max_num_seqs"),
    "batched_tokens_below_model_len": ("max_num_batched_tokens", "max_model_len"),
    "other_config_error": ("max_model_len", "max_num_batched_tokens", "max_num_seqs"),
    "preemption_storm": ("max_num_seqs", "gpu_memory_utilization", "max_model_len", "max_num_batched_tokens"),
    "kv_cache_pressure": ("max_num_seqs", "gpu_memory_utilization", "max_model_len", "max_num_batched_tokens"),
    "queue_growth": ("max_num_seqs", "max_num_batched_tokens", "gpu_memory_utilization"),
    "cotenant_oom": ("gpu_memory_utilization", "max_model_len", "max_num_seqs"),
}

#: a refinement costs one more canary after a seed that already works, so it is spent only
#: when the predictor expects at least 5% more fitness than the seed: a gain that clearly
#: exceeds the gap between a prediction and a canary's measurement, not a rounding win
REFINE_MARGIN = 1.05
#: predictions a refinement may make: a simulated one costs milliseconds, and a passing seed
#: should reach its promotion in well under a second. The coordinate sweeps may spend
#: SWEEP_BUDGET of them (BRACKET values per narrowing), the moves of pairs the rest
SWEEP_BUDGET, REFINE_BUDGET, BRACKET = 48, 96, 6
#: the most configs the tournament predicts to rank its pool: about 2 s of the simulator's
#: predictions (0.1 ms each). Every bundled scenario's neighbourhood fits (at most about
#: 16,000 with all four actuators searched); wider grids, or `max_changes` above 2 (four
#: 256-value grids changed 4 at a time are 4e9 configs), are sampled more coarsely instead
MAX_NEIGHBOURHOOD = 20_000


def relevant_actuators(kinds: list[FailureKind]) -> list[str]:
    out: list[str] = []
    for kind in kinds:
        for name in RELEVANT.get(kind, RELEVANT["other_config_error"]):
            if name not in out:
                out.append(name)
    return out


def _values(name: str, current: ServingConfig, bounds: ActuatorBounds) -> list:
    if name == "enforce_eager":
        return [not current.enforce_eager] if bounds.enforce_eager_allowed or current.enforce_eager else []
    return [v for v in bounds.numeric()[name].grid() if v != getattr(current, name)]


def _size(lengths: list[int], max_changes: int) -> int:
    """How many configs change 1..max_changes of actuators with these numbers of values."""
    return sum(math.prod(combo) for k in range(1, max_changes + 1) for combo in itertools.combinations(lengths, k))


def _thinned(values: list) -> list:
    """About half of `values`, evenly spaced, both ends kept."""
    k = (len(values) + 1) // 2
    return [values[(i * (len(values) - 1)) // (k - 1)] for i in range(k)] if k > 1 else values[:1]


def neighbourhood(current: ServingConfig, names: list[str], bounds: ActuatorBounds,
                  max_changes: int) -> list[ServingConfig]:
    """Every config that changes 1..max_changes of `names` to other values inside the bounds,
    at most MAX_NEIGHBOURHOOD of them: while there would be more, the longest list of values
    is halved, evenly and keeping its ends, so the whole space is still covered, more coarsely."""
    values = {name: _values(name, current, bounds) for name in names}
    while _size([len(v) for v in values.values()], max_changes) > MAX_NEIGHBOURHOOD:
        longest = max(values, key=lambda name: len(values[name]))
        values[longest] = _thinned(values[longest])
    out = []
    for k in range(1, max_changes + 1):
        for combo in itertools.combinations(names, k):
            for picked in itertools.product(*(values[n] for n in combo)):
                out.append(current.changed(**dict(zip(combo, picked))))
    return out


def _index(grid: list, value) -> int:
    """The grid index nearest to `value` (production's value may lie off the grid)."""
    return min(range(len(grid)), key=lambda i: (abs(grid[i] - value), i))


def _sweep(best: ServingConfig, best_fitness: float, names: list[str], current: ServingConfig,
           bounds: ActuatorBounds, max_changes: int, probe: Callable[[ServingConfig], float],
           spent: Callable[[], int], limit: int) -> tuple[ServingConfig, float, bool]:
    """One coordinate sweep: each actuator in turn, its grid narrowed around its best value."""
    moved = False
    for name in names:
        changed = current.diff(best)
        if name not in changed and len(changed) >= max_changes:
            continue
        if name == "enforce_eager" and not (bounds.enforce_eager_allowed or current.enforce_eager):
            continue
        grid = [False, True] if name == "enforce_eager" else bounds.numeric()[name].grid()
        lo, hi = 0, len(grid) - 1
        while spent() < limit:
            picks = sorted({lo + round(i * (hi - lo) / (BRACKET - 1)) for i in range(BRACKET)})
            scored = [(probe(best.changed(**{name: grid[i]})), -k, i) for k, i in enumerate(picks)]
            top, _, at = max(scored)
            if top > best_fitness:
                best, best_fitness, moved = best.changed(**{name: grid[at]}), top, True
            if hi - lo < BRACKET:
                break
            k = picks.index(at)
            lo, hi = picks[max(0, k - 1)], picks[min(len(picks) - 1, k + 1)]
    return best, best_fitness, moved


def _pairs(best: ServingConfig, best_fitness: float, names: list[str], current: ServingConfig,
           bounds: ActuatorBounds, max_changes: int,
           probe: Callable[[ServingConfig], float]) -> tuple[ServingConfig, float, bool]:
    """Moves of two actuators together, along the four diagonals of their grids, a step that
    doubles while it gains and falls back to one when it overshoots. This walks the ridge a
    single-actuator sweep stops on: more utilization only pays with a longer max_model_len
    (alone it costs headroom), a longer max_model_len only fits with more utilization."""
    moved = False
    numeric = [n for n in names if n != "enforce_eager"]
    for a, b in itertools.combinations(numeric, 2):
        if len(set(current.diff(best)) | {a, b}) > max_changes:
            continue
        ga, gb = bounds.numeric()[a].grid(), bounds.numeric()[b].grid()
        for da, db in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
            step = 1
            while True:
                ia, ib = _index(ga, getattr(best, a)) + da * step, _index(gb, getattr(best, b)) + db * step
                if not (0 <= ia < len(ga) and 0 <= ib < len(gb)):
                    if step == 1:
                        break
                    step = 1
                    continue
                candidate = best.changed(**{a: ga[ia], b: gb[ib]})
                gained = probe(candidate)
                if gained > best_fitness:
                    best, best_fitness, moved, step = candidate, gained, True, step * 2
                elif step > 1:
                    step = 1
                else:
                    break
    return best, best_fitness, moved


def climb(start: ServingConfig, start_fitness: float, names: list[str], current: ServingConfig,
          bounds: ActuatorBounds, max_changes: int, fitness: Callable[[ServingConfig], float],
          budget: Callable[[], int]) -> tuple[ServingConfig, float]:
    """Coordinate ascent, then moves of pairs, on `fitness` from `start`: at most REFINE_BUDGET
    predictions in all (`budget()` counts those made so far; none is asked for past the bound),
    the coordinate sweeps alone at most SWEEP_BUDGET of them.

    Unlike predicting the whole neighbourhood (thousands of simulations on a wide grid,
    seconds of work), this narrows each actuator's grid down around its best value, BRACKET
    values at a time, moving one actuator at a time; then it moves two together along their
    diagonals (`_pairs`), and sweeps again after a pair gained. It never changes more than
    `max_changes` parameters of `current` (production). It finds the best of a grid whose
    fitness rises to a peak or a cliff (more KV room, until the config no longer fits), and
    the ridge where two of them must move together; it may miss a second, distant peak.
    Returns (best config, its fitness)."""

    def probe(config: ServingConfig) -> float:
        return fitness(config) if budget() < REFINE_BUDGET else float("-inf")

    best, best_fitness = start, start_fitness
    for _ in range(len(names)):  # sweeps: a move on one actuator can open a better value on another
        best, best_fitness, moved = _sweep(best, best_fitness, names, current, bounds, max_changes, probe,
                                           budget, SWEEP_BUDGET)
        if not moved or budget() >= SWEEP_BUDGET:
            break
    for _ in range(len(names)):  # pairs, each gain followed by a sweep on what it opened
        best, best_fitness, paired = _pairs(best, best_fitness, names, current, bounds, max_changes, probe)
        if not paired or budget() >= REFINE_BUDGET:
            break
        best, best_fitness, _ = _sweep(best, best_fitness, names, current, bounds, max_changes, probe,
                                       budget, REFINE_BUDGET)
    return best, best_fitness
