"""Canary backends: start a candidate configuration apart from production and measure it.

A backend is an edge: what it returns is recorded (CanaryCompleted) before anything
depends on it, and replay reads those records instead of running canaries again.
"""
from __future__ import annotations

from datetime import datetime
from collections.abc import Callable
from typing import Protocol

import msgspec

from selfheal.schemas.events import CanaryMeasurements
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
    failure_kind: str | None = None


class Predictor(Protocol):
    def predict(self, config: ServingConfig, production: ServingConfig) -> Prediction:
        ...


class NoPredictor:
    """For deployments without a memory model: every candidate is 'unknown'."""

    def predict(self, config: ServingConfig, production: ServingConfig) -> Prediction:
        return Prediction(passes=None)


MEASURED = tuple(f for f in CanaryMeasurements.__struct_fields__)


def measurements_of(result) -> CanaryMeasurements:
    """The measurement fields of a backend's result object, as the event records them."""
    return CanaryMeasurements(**{name: getattr(result, name) for name in MEASURED})
