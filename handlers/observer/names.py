"""What an expression may read (see expr.py): the fixed names, and the environment of one finding.

Fixed names: ``buffer``, ``current.<param>`` for every tunable parameter (absent when the
caller gave no config) and ``bounds.<param>.min|max|step`` for the parameters with a grid, plus
``bounds.enforce_eager_allowed``. Bare names are the rule's numbers and derived values.
Every value is checked once when the environment is built, so the expression's static types
hold at evaluation: numbers are finite ints or floats (never bools), switches are bools.
"""
from __future__ import annotations

import math
from collections.abc import Collection, Mapping

from selfheal.schemas.actuators import ActuatorBounds
from selfheal.schemas.serving import TUNABLE

# integers stay convertible to float (so mixed arithmetic and formatting cannot overflow), and big-int
# work stays bounded (no repeated squaring to a million digits)
MAX_INT = 2**1023
NUM, BOOL = "number", "boolean"
GRID = ("gpu_memory_utilization", "max_num_seqs", "max_model_len", "max_num_batched_tokens")
CURRENT = {p: (BOOL if p == "enforce_eager" else NUM) for p in TUNABLE}
FIXED = {"buffer": NUM, "bounds.enforce_eager_allowed": BOOL,
         **{f"current.{p}": t for p, t in CURRENT.items()},
         **{f"bounds.{p}.{a}": NUM for p in GRID for a in ("min", "max", "step")}}


class ExprError(ValueError):
    """An expression that cannot be compiled or evaluated; `position` is 0-based in `source`.
    `missing` is true when evaluation failed only because a name had no value."""

    def __init__(self, message: str, position: int | None = None, source: str = "", missing: bool = False):
        self.message, self.position, self.source, self.missing = message, position, source, missing
        where = "" if position is None else f" at position {position}"
        super().__init__(f"{message}{where}" + (f" in {source!r}" if source and len(source) <= 200 else ""))


class Env:
    """What an expression may read: named values, the actuator grid, the captures that matched."""

    __slots__ = ("values", "bounds", "captures")

    def __init__(self, values: dict[str, object], bounds: ActuatorBounds, captures: Collection[str] = ()):
        self.values, self.bounds, self.captures = values, bounds, captures

    @classmethod
    def build(cls, numbers: Mapping[str, float | int], current, bounds: ActuatorBounds, buffer: float,
              captures: Collection[str] = ()) -> Env:
        values: dict[str, object] = {k: v for k, v in numbers.items() if is_number(v)}
        if is_number(buffer):
            values["buffer"] = buffer
        values["bounds.enforce_eager_allowed"] = bool(bounds.enforce_eager_allowed)
        for p in GRID:
            act = getattr(bounds, p)
            for attr in ("min", "max", "step"):
                if is_number(getattr(act, attr)):
                    values[f"bounds.{p}.{attr}"] = getattr(act, attr)
        if current is not None:
            for p, kind in CURRENT.items():
                v = getattr(current, p)
                if (isinstance(v, bool) if kind == BOOL else is_number(v)):
                    values[f"current.{p}"] = v
        return cls(values, bounds, captures)


def is_number(v) -> bool:
    if isinstance(v, float):
        return math.isfinite(v)
    return isinstance(v, int) and not isinstance(v, bool) and abs(v) <= MAX_INT


ABSENT = object()  # what `Env.values.get` gives for a name without a value


def is_known(values: Mapping[str, object], key: str) -> bool:
    value = values.get(key, ABSENT)
    return value is not ABSENT and type(value) is not Failed


class Failed:
    """A derived value whose computation failed for a reason other than a missing name: using it
    raises that error again (so the fix is "not computable", as the reason deserves)."""

    __slots__ = ("error",)

    def __init__(self, error: ExprError):
        self.error = error
