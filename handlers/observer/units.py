"""Exact conversion of the numbers and sizes that vLLM and PyTorch print.

Every conversion goes through `Decimal`, so "3.09 GiB" becomes exactly 3164.16 MiB and
"605.88 MiB" exactly 0.5916796875 GiB; only the final value is turned into a float (the float
nearest the exact decimal result).

Units, all 1024-based:

- ``bytes``, ``KiB``, ``MiB``, ``GiB``, ``TiB`` as PyTorch's ``format_size`` prints them
  (``0 bytes``, ``448.00 KiB``, ``605.88 MiB``, ``3.09 GiB``).
- ``GB``: vLLM 0.7.0 - 0.8.2 prints KV-cache sizes as ``{bytes / 1024**3:.2f} GB`` and older
  weight-loading lines as ``... took %.4f GB`` of ``bytes / 2**30``. vLLM never divides by 10**9
  in the messages this observer reads, so its "GB" is a GiB with a wrong label. Reading it as
  10**9 bytes would understate every size by 7%, so here ``GB`` means GiB. (PyTorch's
  allocator never prints "GB".) This table is for vLLM/PyTorch logs only.
- counts such as ``43,392 tokens``: thousands separators are dropped.
"""
from __future__ import annotations

import functools
import math
import re
from decimal import Decimal, InvalidOperation

#: bytes per unit; "GB" is vLLM's mislabelled GiB (see the module docstring)
UNIT_BYTES: dict[str, int] = {
    "bytes": 1,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "TiB": 1024**4,
    "GB": 1024**3,
}

#: the source units a rule may declare for a capture
#: ("size": the capture carries its own unit, e.g. "605.88 MiB"; "count": an integer,
#: thousands separators allowed; "ratio": a plain decimal such as a utilization; "percent": a
#: ratio printed as a percentage, to a key ending in _utilization)
SOURCE_UNITS = frozenset(UNIT_BYTES) | {"size", "count", "ratio", "percent"}

#: numbers with more digits than this are not real measurements; refusing them keeps
#: int() and str() below Python's 4300-digit conversion limit on hostile input
_MAX_DIGITS = 30
_PLAIN = re.compile(r"-?\d+(?:\.\d+)?")


def target_unit(key: str) -> str:
    """The unit a number key is expressed in, from its suffix: ``free_gib`` -> "GiB"."""
    if key.endswith("_gib"):
        return "GiB"
    if key.endswith("_mib"):
        return "MiB"
    if key.endswith("_utilization"):
        return "ratio"
    return "count"


def decimal_of(text: str) -> Decimal | None:
    """The exact decimal value of a printed number ("43,392" -> 43392), or None."""
    cleaned = text.strip().replace(",", "")
    # plain decimals only, as vLLM and PyTorch print them (no "1e5", "nan", "inf")
    if not _PLAIN.fullmatch(cleaned) or len(cleaned) > _MAX_DIGITS + 2:
        return None
    try:
        return Decimal(cleaned)
    except InvalidOperation:  # pragma: no cover - the pattern admits only valid decimals
        return None


def split_size(text: str) -> tuple[str, str] | None:
    """``"605.88 MiB"`` -> ("605.88", "MiB"); tolerant of missing or extra whitespace."""
    stripped = text.strip()
    for unit in UNIT_BYTES:
        if stripped.endswith(unit):
            number = stripped[: -len(unit)].strip()
            return (number, unit) if number else None
    return None


@functools.lru_cache(maxsize=1024)
def convert(text: str, unit: str, to: str) -> float | int | None:
    """Convert the printed number `text`, given in `unit`, to `to`.

    `unit` is one of SOURCE_UNITS; `to` is "GiB", "MiB", "count" or "ratio". Returns None when
    the text is not a number or the conversion makes no sense (a size read as a count). The
    last conversions are remembered: a failure a log repeats prints the same numbers each time.
    """
    if unit == "size":
        parts = split_size(text)
        if parts is None:
            return None
        text, unit = parts
    value = decimal_of(text)
    if value is None:
        return None
    if unit == "percent":  # "GPU KV cache usage: 99.5%": a ratio printed as a percentage
        return _finite(float(value / 100)) if to == "ratio" else None
    if unit in ("count", "ratio"):
        if to == "count":
            return int(value) if value == value.to_integral_value() else _finite(float(value))
        if to == "ratio":
            return _finite(float(value))
        return None
    if unit not in UNIT_BYTES or to not in UNIT_BYTES:
        return None
    return _finite(float(value * UNIT_BYTES[unit] / UNIT_BYTES[to]))


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
