"""Bounded actuators: the only values selfheal may give each tunable parameter.

Defaults are MISSION's, for a 12 GB card; every deployment can override them.

A grid is searched value by value (and pairs of actuators value by value pair), so its size
is bounded: MAX_GRID_POINTS values per actuator. The config file refuses a wider one
(schemas/config.py); an Actuator built in code (a scenario file, a library caller) refuses
non-finite bounds, and its `grid()` samples a finer grid evenly down to the bound.
"""
from __future__ import annotations

import builtins
import math

import msgspec

from selfheal.schemas.serving import ServingConfig

#: the most values one actuator's grid may hold. The bundled scenarios use at most 125
#: (max_model_len 4096..131072 step 1024) and 256 still takes a 128k context in steps of 512
#: or max_num_seqs 1..256 in steps of 1; the tournament predicts each value and each pair of
#: values (handlers/models/search.py), so a wider grid buys resolution nobody tunes by at a
#: cost that grows with its square
MAX_GRID_POINTS = 256


def grid_problem(min: float, max: float, step: float) -> str | None:
    """Why `min`, `max` and `step` do not make a searchable grid, or None when they do."""
    for label, value in (("min", min), ("max", max), ("step", step)):
        if not math.isfinite(value):
            return f"{label} must be a finite number, got {value}"
    if step <= 0:
        return f"step must be above 0, got {step:g}"
    points = grid_points(min, max, step)
    if points > MAX_GRID_POINTS:
        size = "more than 10^15" if points == math.inf else f"{points:,}"
        return (f"{size} grid points from {min:g} to {max:g} in steps of {step:g}; allowed: at most "
                f"{MAX_GRID_POINTS} (a wider step or a narrower range)")
    return None


def grid_points(min: float, max: float, step: float) -> float:
    """How many values min, min+step, ... <= max holds (math.inf when too many to count)."""
    steps = (max - min) / step
    if not math.isfinite(steps) or steps > 1e15:
        return math.inf
    # floor, not round: a max off the grid must not put a value above it
    return builtins.max(0, int(math.floor(steps + 1e-9)) + 1)


class Actuator(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    min: float
    max: float
    step: float

    def __post_init__(self):
        # NaN and infinity make every comparison and every snap meaningless: refused when built
        for label in ("min", "max", "step"):
            if not math.isfinite(getattr(self, label)):
                raise ValueError(f"actuator {self.name}: {label} must be a finite number, got {getattr(self, label)}")
        if self.step <= 0:
            raise ValueError(f"actuator {self.name}: step must be above 0, got {self.step:g}")

    def contains(self, value: float) -> bool:
        return self.min - 1e-9 <= value <= self.max + 1e-9

    def _snap(self, value: float, rounding) -> float:
        # count steps from `min` so that the grid is min, min+step, ... whatever min is;
        # the epsilon keeps 0.7999999 from flooring to 0.75
        steps = rounding((value - self.min) / self.step + (1e-9 if rounding is math.floor else -1e-9))
        snapped = self.min + steps * self.step
        return _tidy(snapped, self.step)

    def floor(self, value: float) -> float:
        """The largest grid value <= value (may lie outside the bounds)."""
        return self._snap(value, math.floor)

    def ceil(self, value: float) -> float:
        """The smallest grid value >= value (may lie outside the bounds)."""
        return self._snap(value, math.ceil)

    def clamp(self, value: float) -> float:
        return _tidy(min(self.max, max(self.min, value)), self.step)

    def grid(self) -> list[float]:
        """min, min+step, ... up to max; at most MAX_GRID_POINTS values, a finer grid sampled
        evenly (both ends kept)."""
        n = grid_points(self.min, self.max, self.step)
        if n <= MAX_GRID_POINTS:
            return [_tidy(self.min + i * self.step, self.step) for i in range(int(n))]
        k = MAX_GRID_POINTS - 1
        if n == math.inf:  # beyond float precision: a step that small means nothing, sample the range
            return sorted({_tidy(min(self.max, self.min * (1 - i / k) + self.max * (i / k)), self.step)
                           for i in range(k + 1)})
        picks = sorted({(i * (int(n) - 1)) // k for i in range(k + 1)})
        return [_tidy(self.min + i * self.step, self.step) for i in picks]


def _tidy(value: float, step: float):
    """Integers stay integers; fractions lose float noise (0.7000000001 -> 0.7)."""
    if float(step).is_integer():
        return int(round(value))
    decimals = max(0, -math.floor(math.log10(step))) + 2
    return round(value, decimals)


class ActuatorBounds(msgspec.Struct, frozen=True, kw_only=True):
    gpu_memory_utilization: Actuator = Actuator(name="gpu_memory_utilization", min=0.60, max=0.90, step=0.05)
    max_num_seqs: Actuator = Actuator(name="max_num_seqs", min=2, max=16, step=2)
    max_model_len: Actuator = Actuator(name="max_model_len", min=1024, max=8192, step=512)
    max_num_batched_tokens: Actuator = Actuator(name="max_num_batched_tokens", min=512, max=16384, step=512)
    #: enforce_eager is a switch; False means selfheal may not turn it on
    enforce_eager_allowed: bool = True
    #: vLLM's kv_cache_memory_bytes (bytes per GPU); None: selfheal never sets it. Off by
    #: default: a size set outright survives every change of utilization, so only a deployment
    #: that names its range hands it to selfheal
    kv_cache_memory_bytes: Actuator | None = None

    def numeric(self) -> dict[str, Actuator]:
        acts = [self.gpu_memory_utilization, self.max_num_seqs, self.max_model_len, self.max_num_batched_tokens]
        if self.kv_cache_memory_bytes is not None:
            acts.append(self.kv_cache_memory_bytes)
        return {a.name: a for a in acts}

    def violations(self, config: ServingConfig) -> list[str]:
        """Human-readable reasons why `config` lies outside these bounds (empty when inside)."""
        out = []
        for name, act in self.numeric().items():
            value = getattr(config, name)
            if value is None:
                continue  # kv_cache_memory_bytes unset: vLLM sizes the cache itself, always allowed
            if not act.contains(value):
                out.append(f"{name}={value} outside [{act.min:g}, {act.max:g}]")
        if config.enforce_eager and not self.enforce_eager_allowed:
            out.append("enforce_eager=true is not allowed for this deployment")
        return out
