"""The library functions behind `selfheal observe`, `run` and `heal`: record incidents, and
drive the loop that handlers.flow declares until no work is left.

Capturing an incident is an input edge (it reads the clock it is given); everything after it
is the runner's.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from selfheal import projections
from selfheal.eventstore.errors import ConcurrencyError
from selfheal.eventstore.recorder import system_clock
from selfheal.eventstore.store import EventStore, Pending, new_id
from selfheal.handlers.escrow import lapse_expired
from selfheal.handlers.flow import handlers
from selfheal.handlers.incidents import new_incident
from selfheal.handlers.observer.encoding import text_of
from selfheal.handlers.ports import DeploymentEdges
from selfheal.handlers.runtime import Runner, RunReport
from selfheal.projections import snapshots
from selfheal.schemas.config import Settings
from selfheal.schemas.events import BaselineImported, IncidentSource, RetryForced
from selfheal.schemas.vllm_yaml import read_serving_values


class InputError(ValueError):
    """A log excerpt that cannot be read."""

    @classmethod
    def unreadable(cls, path: str, exc: OSError) -> InputError:
        return cls(f"{path}: cannot read: {exc.strerror or exc}")


def runner(store: EventStore, settings: Settings, deployments: dict[str, DeploymentEdges],
           mode: str | None = None, node: str = "") -> Runner:
    """A runner whose view starts from the newest valid snapshot, if there is one; `node`
    (chosen at the edge) is recorded in the runs it starts or refuses."""
    driver = Runner(store, handlers(settings, deployments, mode or settings.effective_mode(), node),
                    projections.registered(), scope=deployments)  # the scope counts on a fleet's log only
    snapshots.restore(driver.view)
    return driver


def run(store: EventStore, settings: Settings, deployments: dict[str, DeploymentEdges],
        mode: str | None = None, clock: Callable[[], datetime] = system_clock, *,
        driver: Runner | None = None, node: str = "") -> RunReport:
    """Record the lapse of promotions past their TTL (the one fact only a clock can tell),
    then drive every handler until no work is left, and save a projection snapshot when
    1,000 events were folded since the last. `driver`: a runner to reuse (a follow loop
    keeps one, and its view, across polls)."""
    driver = driver or runner(store, settings, deployments, mode, node)
    lapse_expired(store, settings, clock(), driver.view)
    report = driver.run_until_idle()
    snapshots.save(driver.view.catch_up())
    report.head = store.last_position()
    return report


def capture(store: EventStore, edges: DeploymentEdges, text: str, source: IncidentSource,
            clock: Callable[[], datetime] = system_clock, force: bool = False) -> str:
    """Record raw text as an incident of a deployment (an edge: it reads the clock).

    The first incident of a deployment also records the configuration it runs as baseline
    version 1, so that every later decision can be traced to a configuration in the log.
    Captures race for that (several `observe` processes or watchers on a fresh log): the
    baseline is appended only onto an empty stream (expected version 0), and a capture that
    loses finds the stream no longer empty, which is what it checked for: it goes on.
    """
    now = clock()
    stream = f"deployment-{edges.name}"
    if store.recorder.stream_version(stream) == 0:
        imported = BaselineImported(deployment=edges.name, version=1, config=edges.current,
                                    source="config file" if edges.settings.current else f"scenario {edges.settings.scenario}",
                                    environment=edges.environment)
        try:
            store.append(stream, [Pending(event=imported, event_id=new_id(), occurred_at=now)], expected_version=0)
        except ConcurrencyError:
            pass  # another capture recorded the deployment's first events meanwhile: the baseline is there
    incident = new_incident(new_id(), edges.name, source, text,
                            {"environment": edges.environment, "model": edges.model}, redact=store.redactor.text)
    captured = Pending(event=incident, event_id=incident.incident_id, occurred_at=now,
                       correlation_id=incident.incident_id)
    # `force`: a person's retry, recorded before the incident so that the loop (and a replay)
    # raises an intent for it even where the window would fold it (projections/intents.py)
    forced = [Pending(event=RetryForced(incident_id=incident.incident_id, deployment=edges.name), event_id=new_id(),
                      occurred_at=now, correlation_id=incident.incident_id)] if force else []
    store.append(f"incident-{incident.incident_id}", [*forced, captured])
    return incident.incident_id


def read_raw(path: str) -> tuple[bytes, IncidentSource]:
    """A log excerpt's bytes from a file or standard input ('-'), as the observer reads them
    best: it scans bytes and decodes only the lines it looks at."""
    if path == "-":
        return sys.stdin.buffer.read(), IncidentSource(kind="stdin")
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InputError.unreadable(path, exc) from None
    return data, IncidentSource(kind="file", path=os.path.abspath(path))


def read_input(path: str) -> tuple[str, IncidentSource]:
    """A log excerpt from a file or standard input ('-'), as UTF-8 (or UTF-16, as PowerShell
    writes, observer/encoding.py); undecodable bytes are kept as U+FFFD."""
    data, source = read_raw(path)
    return text_of(data), source


def observe(store: EventStore, deployment: DeploymentEdges, paths: list[str],
            clock: Callable[[], datetime] = system_clock, force: bool = False) -> list[str]:
    """Record each file (or '-') as an incident; returns the incident ids. `force`: each raises
    an intent of its own, never folded into an earlier one (`heal --force`).

    Every input is read before any is recorded, so a missing file leaves the log untouched."""
    inputs = [read_input(p) for p in paths]
    return [capture(store, deployment, text, source, clock=clock, force=force) for text, source in inputs]


def heal(store: EventStore, settings: Settings, deployments: dict[str, DeploymentEdges], name: str,
         paths: list[str], clock: Callable[[], datetime] = system_clock, node: str = "",
         force: bool = False) -> list[str]:
    """Observe the files as incidents of deployment `name`, then run the loop to its outcome;
    `force`: not folded into an intent raised for the same failure inside the window."""
    ids = observe(store, deployments[name], paths, clock, force)
    run(store, settings, deployments, clock=clock, node=node)
    return ids


def import_baseline(store: EventStore, edges: DeploymentEdges, path: str | None = None,
                    clock: Callable[[], datetime] = system_clock) -> BaselineImported:
    """Record the vLLM YAML a deployment runs now as its baseline version 1."""
    source = path or edges.settings.config_file
    if not source:
        raise InputError(f"deployment {edges.name!r}: give the YAML to import (no config_file is configured)")
    values = read_serving_values(source)
    config = edges.current.changed(**{k: v for k, v in values.items()})
    stream = f"deployment-{edges.name}"
    if store.recorder.stream_version(stream) != 0:
        raise InputError(f"deployment {edges.name!r} already has a baseline in the log")
    imported = BaselineImported(deployment=edges.name, version=1, config=config, source=f"file {source}",
                                environment=edges.environment)
    store.append(stream, [Pending(event=imported, event_id=new_id(), occurred_at=clock())], expected_version=0)
    return imported
