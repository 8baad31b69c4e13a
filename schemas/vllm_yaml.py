"""Reading the serving parameters out of a vLLM config YAML (`vllm serve --config FILE`).

vLLM accepts both spellings of a key (`max-model-len` and `max_model_len`); so does this.
"""
from __future__ import annotations

import math
from pathlib import Path

import yaml

from selfheal.schemas.config import ConfigError
from selfheal.schemas.serving import TUNABLE


def read_serving_values(path: str | Path) -> dict:
    """The tunable parameters a vLLM YAML sets; other keys are left alone."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}): {exc.reason}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a vLLM config must be a mapping of flag names to values, got {type(raw).__name__}")
    values = {}
    for key, value in raw.items():
        name = str(key).replace("-", "_")
        if name in TUNABLE:
            values[name] = _checked(path, key, name, value)
    return values


def _checked(path, key, name: str, value):
    """The value if its type fits the parameter; otherwise one error naming file and key."""
    if name == "enforce_eager":
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: {key}: {value!r} is not allowed; allowed: true or false")
    if name == "gpu_memory_utilization":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0 < value <= 1
        if ok:
            return float(value)
        raise ConfigError(f"{path}: {key}: {value!r} is not allowed; allowed: a number in (0, 1]")
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise ConfigError(f"{path}: {key}: {value!r} is not allowed; allowed: a positive whole number")
