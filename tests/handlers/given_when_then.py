"""Given/when/then for one handler on its own: events in, events out.

    log = Given(("run-r1", RunStarted(...)), ("run-r1", CandidateProposed(...)))
    then = log.when(handler)                     # handles the last event given
    assert then.types == ["PreflightPassed"] and then.streams == ["run-r1"]
    then.caused()                                # causation, correlation, the cause's time

The log is an in-memory store whose recording clock is fixed in the past (nothing here reads
the wall clock); the view is every registered projection caught up to the log, as the runner
gives it. An activity gets a real `Progress`, so the facts it records while it acts land in
the log (`then.progress`). `then.record()` appends the outputs, for the next `when`.
"""
from __future__ import annotations

import itertools
from datetime import datetime, timedelta

from selfheal import projections
from selfheal.eventstore import Pending, Recorded, derived_id, memory_store
from selfheal.handlers.ports import DeploymentEdges, NoPredictor
from selfheal.handlers.runtime import Handler, Progress
from selfheal.projections.base import View
from selfheal.schemas.config import parse_settings
from selfheal.schemas.events import Event
from selfheal.schemas.serving import ServingConfig
from tests.conftest import T0, StepClock

#: every given event happens at T0 (tests/conftest.py) unless told otherwise; handlers must carry it over
DEPLOYMENT = "ws"
ENVIRONMENT = "env:rtx3060-speech"
#: the workstation's production config (12 GB card, speech co-tenants)
PRODUCTION = ServingConfig(gpu_memory_utilization=0.8, max_model_len=8192, max_num_seqs=16,
                           max_num_batched_tokens=2048)


def at(hours: float = 0, minutes: float = 0, seconds: float = 0) -> datetime:
    return T0 + timedelta(hours=hours, minutes=minutes, seconds=seconds)


def settings(deployment: str = DEPLOYMENT, extra: str = "", mode: str = "dev"):
    """Settings with one deployment; `extra` is TOML added to its table."""
    return parse_settings(f'mode = "{mode}"\n[deployments.{deployment}]\n{extra}\n')


def deployment(settings_=None, **ports) -> dict[str, DeploymentEdges]:
    """`{DEPLOYMENT: edges}` with the default bounds, PRODUCTION, no predictor and the given
    fake ports (backend, inventory, config_file, reloader, alerts, reaper, predictor, ...)."""
    chosen = settings_ or settings()
    fields = dict(name=DEPLOYMENT, settings=chosen.deployments[DEPLOYMENT],
                  bounds=chosen.deployments[DEPLOYMENT].bounds(), current=PRODUCTION, backend=None,
                  inventory=None, predictor=NoPredictor(), environment=ENVIRONMENT, model="speech-llm")
    fields.update(ports)
    return {DEPLOYMENT: DeploymentEdges(**fields)}


class Given:
    """A log holding the prior events, each `(stream, event)` or `(stream, event, occurred_at)`."""

    def __init__(self, *events):
        self.store = memory_store(clock=StepClock())
        self._ids = itertools.count(1)
        self.last: Recorded | None = None
        for item in events:
            self.record(*item)

    def record(self, stream: str, event: Event | Pending, occurred_at: datetime = T0) -> Recorded:
        pending = event if isinstance(event, Pending) else Pending(
            event=event, event_id=derived_id("given", str(next(self._ids))), occurred_at=occurred_at)
        self.store.append(stream, [pending])
        self.last = self.store.get(pending.event_id)
        return self.last

    def events(self, *types: str) -> list[Recorded]:
        return [r for r in self.store.read() if not types or r.type in types]

    def view(self) -> View:
        return View(self.store, projections.registered()).catch_up()

    def when(self, handler: Handler, event: Recorded | None = None) -> "Then":
        """`handler` handles `event` (default: the last one given), as the runner calls it."""
        cause = event or self.last
        assert cause is not None and cause.type in handler.subscribed_names(), \
            f"{handler.name} does not subscribe to {cause and cause.type}"
        before = self.store.last_position()
        emitted = list(handler(cause, self.view(), Progress(self.store, handler)))
        undeclared = [type(p.event).__name__ for _, p in emitted if not isinstance(p.event, handler.emits)]
        assert not undeclared, f"{handler.name} emitted undeclared {undeclared}"
        progress = [r for r in self.store.read(before)]
        return Then(self, cause, emitted, progress)


class Then:
    def __init__(self, given: Given, cause: Recorded, emitted: list[tuple[str, Pending]],
                 progress: list[Recorded]):
        self.given, self.cause, self.emitted, self.progress = given, cause, emitted, progress

    @property
    def types(self) -> list[str]:
        return [type(p.event).__name__ for _, p in self.emitted]

    @property
    def streams(self) -> list[str]:
        return [stream for stream, _ in self.emitted]

    @property
    def events(self) -> list[Event]:
        return [p.event for _, p in self.emitted]

    def one(self, type_name: str) -> Event:
        found = [e for e in self.events if type(e).__name__ == type_name]
        assert len(found) == 1, f"expected one {type_name}, got {self.types}"
        return found[0]

    def caused(self, occurred_at: datetime | None = None) -> "Then":
        """Every output is caused by the event handled, in its correlation, at its time (or
        `occurred_at`, a time the port reported), with an id derived from it."""
        when = occurred_at or self.cause.occurred
        correlation = self.cause.correlation_id or self.cause.event_id
        for stream, p in self.emitted:
            name = type(p.event).__name__
            assert p.causation_id == self.cause.event_id, f"{name} on {stream}: causation {p.causation_id}"
            assert p.correlation_id == correlation, f"{name} on {stream}: correlation {p.correlation_id}"
            assert p.occurred_at == when, f"{name} on {stream}: occurred {p.occurred_at}, expected {when}"
        ids = [p.event_id for _, p in self.emitted]
        assert len(set(ids)) == len(ids), "two outputs share an event id"
        return self

    def record(self) -> list[Recorded]:
        """Append the outputs to the log (as the runner would), for the next `when`."""
        out = []
        for stream, pending in self.emitted:
            out.append(self.given.record(stream, pending))
        return out
