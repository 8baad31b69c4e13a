"""Bounded actuators: the only values selfheal may give each tunable parameter.

Defaults are MISSION's, for a 12 GB card; every deployment can override them.
"""
from __future__ import annotations

import math

import msgspec

from selfheal.schemas.serving import ServingConfig


class Actuator(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    min: float
    max: float
    step: float

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
        # floor, not round: a max off the grid must not put a value above it
        n = int(math.floor((self.max - self.min) / self.step + 1e-9))
        return [_tidy(self.min + i * self.step, self.step) for i in range(n + 1)]


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

    def numeric(self) -> dict[str, Actuator]:
        return {
            a.name: a
            for a in (self.gpu_memory_utilization, self.max_num_seqs, self.max_model_len, self.max_num_batched_tokens)
        }

    def violations(self, config: ServingConfig) -> list[str]:
        """Human-readable reasons why `config` lies outside these bounds (empty when inside)."""
        out = []
        for name, act in self.numeric().items():
            value = getattr(config, name)
            if not act.contains(value):
                out.append(f"{name}={value} outside [{act.min:g}, {act.max:g}]")
        if config.enforce_eager and not self.enforce_eager_allowed:
            out.append("enforce_eager=true is not allowed for this deployment")
        return out
