"""The user's config file, `selfheal.toml`, validated with pydantic into clear errors.

Every error names the file, the key (dotted path), what is wrong and what is allowed.
"""
from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from selfheal.schemas.actuators import Actuator, ActuatorBounds, grid_problem
from selfheal.schemas.redaction import check_pattern
from selfheal.schemas.serving import ServingConfig

MODES = ("dev", "prod", "disabled")
MODE_ENV = "SELFHEAL_MODE"


class ConfigError(Exception):
    """One clear line: file, key, problem, allowed values."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RateLimitSettings(_Strict):
    runs: int = Field(3, ge=1, description="runs allowed in any rolling window")
    window_hours: float = Field(24, gt=0)
    cooldown_hours: float = Field(6, ge=0, description="quiet time after each run")
    backoff_after_failures: int = Field(2, ge=1, description="consecutive failed runs before backoff")
    backoff_base_hours: float = Field(6, gt=0, description="first backoff; doubles per further failure")
    backoff_max_hours: float = Field(168, gt=0)


class ObserverSettings(_Strict):
    safety_buffer: float = Field(0.10, ge=0, lt=1)
    dedupe_window_minutes: float = Field(60, ge=0, description="same incident inside it raises one intent")


class TournamentSettings(_Strict):
    max_candidates: int = Field(6, ge=1, le=100)
    max_changes: int = Field(2, ge=1, le=5, description="parameters a candidate may change")


class PreflightSettings(_Strict):
    margin_gib: float = Field(0.5, ge=0, description="free memory kept back beyond the request")


class ActuatorSettings(_Strict):
    """One actuator's bounds: finite, ordered, and a grid of at most MAX_GRID_POINTS values
    (schemas/actuators.py says why), so what passes here can always be searched."""

    min: float = Field(allow_inf_nan=False)
    max: float = Field(allow_inf_nan=False)
    step: float = Field(gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _ordered(self):
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        problem = grid_problem(self.min, self.max, self.step)
        if problem:
            raise ValueError(problem)
        return self


class LoadPhaseSettings(_Strict):
    """The canary's load phase (vllm backend): bounded in requests and in time."""

    requests: int = Field(16, ge=1, le=10_000)
    max_concurrency: int = Field(8, ge=1, le=1024, description="never above the candidate's max_num_seqs")
    prompt_fraction: float = Field(1.0, gt=0, le=1, description="longest prompt, as a fraction of max_model_len")
    longest_prompt_tokens: int | None = Field(None, ge=2, description="the longest prompt production serves, in tokens "
                                              "(a candidate that refuses it fails); default: from prompt_fraction")
    max_tokens: int = Field(32, ge=1, le=4096)
    timeout_s: float = Field(120, gt=0, description="the whole load phase")


DEFAULT_COMMAND = ["vllm", "serve", "{model}", "--host", "{host}", "--port", "{port}"]


class ReloadSettings(_Strict):
    """How a committed config reaches the running server. vLLM has no SIGHUP handler (it exits
    on one), so a plain vLLM is restarted; `signal` suits `selfheal supervise` or a wrapper."""

    method: Literal["restart", "signal", "none"] = "restart"
    argv: list[str] = Field(default_factory=list, description="restart command, e.g. [systemctl, restart, vllm]")
    pid: int | None = None
    pidfile: str | None = None
    signal: str = "SIGHUP"
    timeout_s: float = Field(120, gt=0)

    @model_validator(mode="after")
    def _complete(self):
        if self.method == "restart" and not self.argv:
            raise ValueError("reload.argv is required for method = 'restart' (e.g. ['systemctl', 'restart', 'vllm'])")
        if self.method == "signal" and self.pid is None and not self.pidfile:
            raise ValueError("reload.pid or reload.pidfile is required for method = 'signal'")
        return self


class VerifySettings(_Strict):
    deadline_s: float = Field(300, gt=0, description="health must come back within this")
    probe_requests: int = Field(3, ge=0, le=100, description="completions sent after health; 0 skips the probe")


class AlertSink(_Strict):
    type: Literal["jsonl", "webhook", "command"]
    path: str | None = None
    url: str | None = None
    argv: list[str] = []
    retries: int = Field(4, ge=0, le=20)
    timeout_s: float | None = Field(
        None, gt=0, le=3600, description="wall-clock deadline of one whole delivery attempt (default: 5 s a "
        "webhook attempt, 30 s a command, 10 s for the JSONL file's lock)")
    max_output_bytes: int | None = Field(
        None, ge=1, le=64 << 20, description="of a webhook's response, and of a command's stdout and stderr "
        "each, what is read and kept; the rest is discarded and the result says it was cut (default 65536)")

    def spec(self) -> dict:
        """The entry as `edges.alerts.sink_from_config` takes it: only this type's keys (a deadline
        or cap left unset is the sink's default)."""
        keys = {"jsonl": ("path", "timeout_s"), "webhook": ("url", "retries", "timeout_s", "max_output_bytes"),
                "command": ("argv", "timeout_s", "max_output_bytes")}[self.type]
        return {"type": self.type, **{k: getattr(self, k) for k in keys if getattr(self, k) is not None}}

    @model_validator(mode="after")
    def _target(self):
        needed = {"jsonl": ("path", self.path), "webhook": ("url", self.url), "command": ("argv", self.argv)}[self.type]
        if not needed[1]:
            raise ValueError(f"{needed[0]} is required for an alert sink of type '{self.type}'")
        if self.type == "jsonl" and self.max_output_bytes is not None:
            raise ValueError("max_output_bytes does not apply to an alert sink of type 'jsonl' (it reads no output)")
        return self


class DeploymentSettings(_Strict):
    model: str = ""
    canary_backend: Literal["sim", "vllm"] = "sim"
    scenario: str | None = Field(None, description="simulator scenario (sim backend)")
    command: list[str] = Field(default_factory=lambda: list(DEFAULT_COMMAND),
                               description="canary launch template (vllm backend); {model} {host} {port} are filled in")
    env: dict[str, str] = {}
    inventory: Literal["nvml", "host"] = "nvml"
    health_timeout_s: float = Field(600, gt=0)
    load: LoadPhaseSettings = LoadPhaseSettings()
    health_url: str | None = Field(None, description="production's /health, e.g. http://127.0.0.1:8000/health")
    serve_command: list[str] = Field(
        default_factory=lambda: ["vllm", "serve", "{model}", "--config", "{config_file}"],
        description="how `selfheal supervise` starts production; {model} and {config_file} are filled in")
    reload: ReloadSettings | None = None
    verify: VerifySettings = VerifySettings()
    alerts: list[AlertSink] = []
    config_file: str | None = None
    current: dict[str, float | int | bool] = {}
    actuators: dict[Literal["gpu_memory_utilization", "max_num_seqs", "max_model_len",
                            "max_num_batched_tokens"], ActuatorSettings] = {}
    enforce_eager_allowed: bool = True

    @model_validator(mode="after")
    def _util_bounds(self):
        util = self.actuators.get("gpu_memory_utilization")
        if util is not None and not (0 < util.min and util.max <= 1):
            raise ValueError("actuators.gpu_memory_utilization must lie in (0, 1]")
        return self

    def bounds(self, base: ActuatorBounds | None = None) -> ActuatorBounds:
        """The actuators this table sets, over `base` (a scenario's bounds; MISSION's defaults,
        for a 12 GB card, when None) for those it does not."""
        base = base or ActuatorBounds()
        overrides = {name: Actuator(name=name, min=a.min, max=a.max, step=a.step)
                     for name, a in self.actuators.items()}
        return ActuatorBounds(**{**base.numeric(), **overrides}, enforce_eager_allowed=self.enforce_eager_allowed)

    def current_config(self) -> ServingConfig:
        return ServingConfig(**self.current)


def check_bounds_fit(deployment: str, bounds: ActuatorBounds, current: ServingConfig,
                     bounds_from: dict[str, str], current_from: dict[str, str]) -> None:
    """Refuse bounds that do not hold the config production runs (issue 15.6): a search inside
    them could only move every actuator it touches far from production (a 32768-token deployment
    given the 12 GB card's [1024, 8192] was offered max_model_len 1024), and every candidate
    would keep the values outside them. One line names the deployment, each actuator, the
    value and where it came from, and the bounds and where they came from.

    `bounds_from` / `current_from`: actuator -> where its bounds / its current value were
    found, for the actuators not set in the deployment's own table (their default wording is
    the config key)."""
    problems, tables = [], []
    for name, actuator in bounds.numeric().items():
        value = getattr(current, name)
        if actuator.contains(value):
            continue
        where = current_from.get(name, f"deployments.{deployment}.current")
        limits = bounds_from.get(name, f"deployments.{deployment}.actuators.{name}")
        problems.append(f"{name} {value:g} (from {where}) lies outside [{actuator.min:g}, {actuator.max:g}] "
                        f"(from {limits})")
        tables.append(f"[deployments.{deployment}.actuators.{name}]")
    if problems:
        raise ConfigError(f"deployment {deployment!r}: its bounds do not hold the config it runs: "
                          + "; ".join(problems) + f"; set {' and '.join(tables)} (min, max, step) to bounds that "
                          "hold it, or correct the current value")


class ApprovalSettings(_Strict):
    ttl_hours: float = Field(24, gt=0, description="a promotion waits this long for approval; an approval lasts as long")


class AlertSettings(_Strict):
    group_minutes: float = Field(60, ge=0, description="repeats of one alert inside it are delivered once, with a count")


class RedactionSettings(_Strict):
    """What is redacted beyond the built-in rules (schemas/redaction.py): the operator's own
    regular expressions; a group named `secret` limits what is replaced to that group."""

    patterns: list[str] = Field(default_factory=list, description="regexes whose matches are secrets")

    @field_validator("patterns")
    @classmethod
    def _checked(cls, patterns: list[str]) -> list[str]:
        for i, pattern in enumerate(patterns):
            try:
                check_pattern(pattern)
            except ValueError as exc:
                raise ValueError(f"redaction.patterns[{i}]: {exc}") from None
        return patterns


class Settings(_Strict):
    mode: Literal["dev", "prod", "disabled"] = "dev"
    approval: ApprovalSettings = ApprovalSettings()
    alerts: AlertSettings = AlertSettings()
    rate_limit: RateLimitSettings = RateLimitSettings()
    observer: ObserverSettings = ObserverSettings()
    tournament: TournamentSettings = TournamentSettings()
    preflight: PreflightSettings = PreflightSettings()
    deployments: dict[str, DeploymentSettings] = {}
    redaction: RedactionSettings = RedactionSettings()

    def effective_mode(self, environ=os.environ) -> str:
        """The mode in force: SELFHEAL_MODE overrides the file."""
        override = environ.get(MODE_ENV)
        if override:
            if override not in MODES:
                raise ConfigError(f"{MODE_ENV}={override!r}: allowed values are {', '.join(MODES)}")
            return override
        return self.mode

    def deployment(self, name: str) -> DeploymentSettings:
        try:
            return self.deployments[name]
        except KeyError:
            known = ", ".join(sorted(self.deployments)) or "none configured"
            raise ConfigError(f"unknown deployment {name!r} (known: {known})") from None


def _allowed(error: dict) -> str:
    ctx = error.get("ctx") or {}
    if "expected" in ctx:
        return f"; allowed: {ctx['expected']}"
    bounds = [f"{op} {ctx[k]}" for k, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")) if k in ctx]
    return f"; allowed: {' and '.join(bounds)}" if bounds else ""


def describe_validation_error(source: str, exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        key = ".".join(str(p) for p in error["loc"]) or "(top level)"
        problem = error["msg"]
        if error["type"] == "extra_forbidden":
            problem = "unknown key"
        elif error["type"] in ("literal_error", "enum"):
            problem = f"{error.get('input')!r} is not allowed"
        parts.append(f"{source}: {key}: {problem}{_allowed(error)}")
    return parts[0] if len(parts) == 1 else f"{parts[0]} (and {len(parts) - 1} more: " + "; ".join(parts[1:]) + ")"


def parse_settings(text: str, source: str = "selfheal.toml") -> Settings:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(source, exc)) from None


def load_settings(path: str | os.PathLike | None) -> Settings:
    """Settings from a file; defaults when `path` is None."""
    if path is None:
        return Settings()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                          "selfheal.toml is TOML, which is UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return parse_settings(text, str(path))
