"""Scenario files for the `sim` canary backend: TOML in, frozen Structs (schemas/scenario.py) out.

A scenario is one deployment the simulator can start: the GPU(s), what else runs on them
(co-tenants), the model's shape, the production config, the load the canary replays, and
the actuator bounds that make sense for that card. Every problem in a file is reported as
one `ScenarioError` naming the file, the key and what is wrong.
"""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import msgspec

from selfheal.schemas.actuators import Actuator, ActuatorBounds
from selfheal.schemas.scenario import (
    Cotenant, EngineSpec, GpuSpec, ModelSpec, Positive, Scenario, Strict, Workload,
)
from selfheal.schemas.serving import TUNABLE, ServingConfig

SCENARIO_DIR = Path(__file__).parent / "scenarios"


class ScenarioError(ValueError):
    """A scenario that cannot be loaded; `file`, `key` and `problem` say which and why."""

    def __init__(self, file: str, key: str | None, problem: str):
        self.file, self.key, self.problem = file, key, problem
        where = f"key '{key}': " if key else ""
        super().__init__(f"scenario file {file}: {where}{problem}")


class _ActuatorSpec(Strict, kw_only=True):
    min: float | None = None
    max: float | None = None
    step: Positive | None = None


class _ActuatorsSpec(Strict, kw_only=True):
    gpu_memory_utilization: _ActuatorSpec | None = None
    max_num_seqs: _ActuatorSpec | None = None
    max_model_len: _ActuatorSpec | None = None
    max_num_batched_tokens: _ActuatorSpec | None = None
    #: off unless given, with all of min, max and step (there is no default range for it)
    kv_cache_memory_bytes: _ActuatorSpec | None = None
    enforce_eager_allowed: bool = True


class _ScenarioFile(Strict, kw_only=True):
    name: str
    description: str
    gpu: GpuSpec
    cotenants: list[Cotenant] = []
    model: ModelSpec
    engine: EngineSpec = EngineSpec()
    current: ServingConfig
    workload: Workload
    actuators: _ActuatorsSpec = _ActuatorsSpec()


def bundled_scenarios() -> list[str]:
    """Names of the scenarios shipped with selfheal, sorted."""
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A bundled scenario by name (e.g. "a-llama8b-24gb"), or any scenario file by path."""
    text = str(name_or_path)
    bundled = SCENARIO_DIR / f"{text}.toml"
    if isinstance(name_or_path, str) and "/" not in text and not text.endswith(".toml") and bundled.is_file():
        path = bundled
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise ScenarioError(
                text, None,
                f"no such scenario: not a bundled name ({', '.join(bundled_scenarios())}) and no such file",
            )
    return parse_scenario(path.read_bytes(), source=str(path))


def parse_scenario(data: bytes | str, *, source: str = "<string>") -> Scenario:
    """Parse scenario TOML; every problem raises ScenarioError(file, key, problem)."""
    try:
        raw = tomllib.loads(data.decode("utf-8") if isinstance(data, bytes) else data)
    except UnicodeDecodeError as e:
        raise ScenarioError(source, None, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(source, None, f"TOML syntax error: {e}") from None
    current = raw.get("current")
    if isinstance(current, dict):
        # ServingConfig has defaults for everything; a scenario must not inherit them silently
        for key in TUNABLE:
            if key not in current:
                raise ScenarioError(source, f"current.{key}", "missing required key")
    try:
        spec = msgspec.convert(raw, _ScenarioFile)
    except msgspec.ValidationError as e:
        key, problem = _split_msgspec_error(str(e))
        raise ScenarioError(source, key, problem) from None
    _check_semantics(spec, source)
    return Scenario(
        name=spec.name, description=spec.description, gpu=spec.gpu, cotenants=list(spec.cotenants),
        model=spec.model, engine=spec.engine, current=spec.current, workload=spec.workload,
        actuators=_bounds(spec.actuators, source), source=source,
    )


_AT = re.compile(r"^(?P<problem>.*?) - at `\$(?P<path>[^`]*)`$", re.S)


def _split_msgspec_error(message: str) -> tuple[str | None, str]:
    """msgspec says "Expected `int`, got `str` - at `$.model.layers`"; make that (key, problem)."""
    m = _AT.match(message)
    # at the top level msgspec names no path: "Object missing required field `name`"
    problem, path = (m["problem"], m["path"]) if m else (message, "")
    key = path.lstrip(".")
    # missing / unknown fields name the field in the problem and its parent in the path
    field = re.search(r"(?:missing required field|unknown field) `([^`]+)`", problem)
    if field:
        key = f"{key}.{field[1]}" if key else field[1]
        problem = "missing required key" if "missing" in problem else "unknown key"
    else:
        problem = problem.replace("Expected", "expected")
    return key or None, problem


def _check_semantics(spec: _ScenarioFile, source: str) -> None:
    m = spec.model
    if m.kv_heads > m.attention_heads:
        raise ScenarioError(source, "model.kv_heads", f"{m.kv_heads} exceeds attention_heads ({m.attention_heads})")
    for i, c in enumerate(spec.cotenants):
        if c.gpu >= spec.gpu.count:
            raise ScenarioError(source, f"cotenants[{i}].gpu",
                                f"GPU {c.gpu} does not exist (gpu.count = {spec.gpu.count})")
        if c.peak_gib is not None and c.peak_gib < c.used_gib:
            raise ScenarioError(source, f"cotenants[{i}].peak_gib", "must be >= used_gib")
    if len({c.pid for c in spec.cotenants}) != len(spec.cotenants):
        raise ScenarioError(source, "cotenants", "two co-tenants share a pid")
    if m.sliding_layers is not None and m.sliding_window is None:
        raise ScenarioError(source, "model.sliding_layers", "given without model.sliding_window")
    if m.sliding_layers is not None and m.sliding_layers > m.layers:
        raise ScenarioError(source, "model.sliding_layers", f"{m.sliding_layers} exceeds layers ({m.layers})")
    cc = spec.gpu.compute_capability
    if cc is not None and not re.fullmatch(r"\d{1,2}\.\d", cc):
        raise ScenarioError(source, "gpu.compute_capability", f"{cc!r} is not major.minor, e.g. \"8.6\"")
    kv = spec.current.kv_cache_memory_bytes
    if kv is not None and kv < 1:
        raise ScenarioError(source, "current.kv_cache_memory_bytes", f"must be a positive byte count, got {kv}")


def _bounds(spec: _ActuatorsSpec, source: str) -> ActuatorBounds:
    defaults = ActuatorBounds()
    values = {}
    for name, default in defaults.numeric().items():
        given = getattr(spec, name)
        if given is None:
            continue
        act = Actuator(
            name=name,
            min=default.min if given.min is None else given.min,
            max=default.max if given.max is None else given.max,
            step=default.step if given.step is None else given.step,
        )
        if act.min > act.max:
            raise ScenarioError(source, f"actuators.{name}", f"min {act.min:g} exceeds max {act.max:g}")
        values[name] = act
    kv = spec.kv_cache_memory_bytes
    if kv is not None:
        if None in (kv.min, kv.max, kv.step):
            raise ScenarioError(source, "actuators.kv_cache_memory_bytes", "give min, max and step (no default range)")
        if kv.min > kv.max:
            raise ScenarioError(source, "actuators.kv_cache_memory_bytes", f"min {kv.min:g} exceeds max {kv.max:g}")
        values["kv_cache_memory_bytes"] = Actuator(name="kv_cache_memory_bytes", min=kv.min, max=kv.max, step=kv.step)
    return ActuatorBounds(**values, enforce_eager_allowed=spec.enforce_eager_allowed)
