"""Ports: what the activities of the loop act through, and what each deployment is wired to.

Activities (handlers.runtime.Activity) touch the world only through these interfaces; the
adapters that implement them live in `edges/` (vLLM processes, NVML, the YAML file, signals,
webhooks) and are wired per deployment by `edges.deployments.build`. So `handlers` never
imports `edges`, and replay swaps the ports of replayable activities for recorded results.

What a port returns is recorded (CanaryCompleted, PreflightPassed, BaselineCommitted, ...)
before anything depends on it, and replay reads those records instead of acting again.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

import msgspec

from selfheal.schemas.actuators import ActuatorBounds
from selfheal.schemas.config import DeploymentSettings
from selfheal.schemas.events import AlertRaised, CanaryMeasurements, GpuSnapshot
from selfheal.schemas.failures import FailureKind
from selfheal.schemas.serving import ServingConfig


class CanaryOutcome(msgspec.Struct, frozen=True, kw_only=True):
    measurements: CanaryMeasurements
    log_text: str
    command: list[str] = []
    #: when the canary ended, where the backend knows better than its cause's time (sim: simulated time)
    finished_at: datetime | None = None


class Launch(msgspec.Struct, frozen=True, kw_only=True):
    """A canary process that now exists; the caller records it before the canary goes on."""

    pid: int
    pgid: int
    port: int | None
    command: list[str]


class CanaryBackend(Protocol):
    name: str
    simulated: bool

    def run(self, config: ServingConfig, started_at: datetime,
            on_launch: Callable[[Launch], None] | None = None, *, canary_id: str | None = None) -> CanaryOutcome:
        """Start the candidate apart from production, load it, measure it, stop it (always).

        A backend that starts a process calls `on_launch` as soon as the process exists and
        marks its processes with `canary_id`, so an orphan can be recognised after a crash.
        """
        ...


class Prediction(msgspec.Struct, frozen=True):
    """What a model expects of a config before any canary: None means it cannot say."""

    passes: bool | None
    fitness: float | None = None
    failure_kind: FailureKind | None = None


class Predictor(Protocol):
    def predict(self, config: ServingConfig, production: ServingConfig) -> Prediction:
        ...


class NoPredictor:
    """For deployments without a memory model: every candidate is 'unknown'."""

    def predict(self, config: ServingConfig, production: ServingConfig) -> Prediction:
        return Prediction(passes=None)


MEASURED = tuple(f for f in CanaryMeasurements.__struct_fields__)


def measurements_of(result) -> CanaryMeasurements:
    """The measurement fields of a backend's result object, as the event records them; a field the
    result does not have (the simulator has no warm start) keeps its default; a list becomes a
    tuple, since measurements are hashed (frozen) and a Struct does not convert on construction."""
    values = {name: getattr(result, name) for name in MEASURED if hasattr(result, name)}
    return CanaryMeasurements(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


class InventoryUnavailable(RuntimeError):
    """The GPUs cannot be read (no GPU, no driver, no NVML). Pre-flight must treat this as a failure."""

    def __init__(self, reason: str, *, source: str = "nvml"):
        self.reason, self.source = reason, source
        super().__init__(f"GPU inventory unavailable ({source}): {reason}. Pre-flight cannot check that a "
                         "candidate fits, so no canary is started; run on a host with an NVIDIA GPU and driver, "
                         "or use a simulated deployment (canary_backend = 'sim').")


@runtime_checkable
class GpuInventory(Protocol):
    """What pre-flight reads before a canary starts (MISSION section 4)."""

    def snapshot(self) -> list[GpuSnapshot]:
        """One entry per device, in index order. Raises InventoryUnavailable if the devices cannot be read."""
        ...


class Written(Protocol):
    """What a config write reports: where, the new bytes' digest, whether anything changed."""

    path: Path
    sha256: str
    changed: bool
    previous_path: Path | None


class ConfigFile(Protocol):
    """The deployment's vLLM YAML: written atomically, the previous version kept."""

    def commit(self, path: str, config: ServingConfig, bounds: ActuatorBounds) -> Written:
        """Write `config` into the file; raises schemas.config.ConfigError with nothing written."""
        ...

    def restore_previous(self, path: str) -> Written:
        ...


class Verification(msgspec.Struct, frozen=True, kw_only=True):
    healthy: bool
    detail: str
    #: when the reload and its verification ended (`started_at` plus what they took, often a
    #: minute); None where the adapter cannot say, and the result carries its request's time
    finished_at: datetime | None = None


class Reloader(Protocol):
    """Reload the production server (restart command or signal), then verify it is healthy."""

    def reload_and_verify(self, method: str, started_at: datetime) -> Verification:
        """Never raises for a server that does not come back. `started_at` is the request's
        time: the adapter measures how long it worked, as a canary backend does."""
        ...


class Delivery(Protocol):
    """One sink's answer: the attempts made and whether the alert got through."""

    ok: bool
    attempts: Sequence
    detail: str


class AlertSinks(Protocol):
    def deliver(self, alert: AlertRaised, raised_at: datetime, count: int) -> list[tuple[str, Delivery]]:
        """Deliver to every configured sink; (sink label, result) for each, in order."""
        ...


class ProcessReaper(Protocol):
    """Stops canary process groups that a crashed selfheal left running."""

    def reap(self, pid: int, pgid: int, canary_id: str) -> tuple[bool, str | None]:
        """(was it alive, the signal that stopped it); a group not marked with canary_id is left alone."""
        ...

    def unrecorded(self, canary_id: str) -> list[tuple[int, int]]:
        """(pid, pgid) of groups marked with canary_id that the log never recorded."""
        ...


@dataclass(frozen=True)
class DeploymentEdges:
    """What one deployment is wired to: its settings and bounds, and an adapter per port.

    `environment` fingerprints GPU, model and co-tenants: a config that failed there is never
    tried there again. Ports a deployment does not use stay None."""

    name: str
    settings: DeploymentSettings
    bounds: ActuatorBounds
    current: ServingConfig
    backend: CanaryBackend
    inventory: GpuInventory
    predictor: Predictor
    environment: str
    model: str
    config_file: ConfigFile | None = None
    reloader: Reloader | None = None
    alerts: AlertSinks | None = None
    reaper: ProcessReaper | None = None
