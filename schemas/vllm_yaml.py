"""Reading the serving parameters out of a vLLM config YAML (`vllm serve --config FILE`).

vLLM accepts both spellings of a key (`max-model-len` and `max_model_len`); so does this.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from schemas.config import ConfigError
from schemas.serving import TUNABLE


def read_serving_values(path: str | Path) -> dict:
    """The tunable parameters a vLLM YAML sets; other keys are left alone."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
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
            values[name] = value
    return values
