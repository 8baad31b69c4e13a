"""Live inputs end to end: lines or metric scrapes in, incidents recorded as they settle.

A reader thread pulls lines (a followed file, journald) into a queue, so that the chunker
gets ticks while the source is quiet and closes an incident after its quiet period instead
of waiting for the next line. Times given to the chunker come from a monotonic clock at
this edge; the incident's recorded time comes from the injected wall clock.
"""
from __future__ import annotations

import _thread
import contextlib
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime

from selfheal.edges.chunker import IncidentChunker
from selfheal.handlers.ports import DeploymentEdges
from selfheal.edges.metrics_watch import MetricsWatch, poll
from selfheal.eventstore.recorder import system_clock
from selfheal.eventstore.store import EventStore
from selfheal.handlers.loop import capture
from selfheal.schemas.events import IncidentSource

_DONE = object()


def watch_lines(store: EventStore, edges: DeploymentEdges, lines: Iterator[str], source: IncidentSource,
                stop: threading.Event, *, quiet_s: float = 2.0, clock: Callable[[], datetime] = system_clock,
                on_incident: Callable[[str], None] | None = None) -> int:
    """Capture the trouble in a stream of log lines as incidents until `stop` or the end."""
    pending: queue.Queue = queue.Queue(maxsize=10_000)

    def read() -> None:
        try:
            for line in lines:
                pending.put(line)
                if stop.is_set():
                    break
        finally:
            pending.put(_DONE)

    threading.Thread(target=read, name="selfheal-follow", daemon=True).start()
    chunker = IncidentChunker(quiet_s=quiet_s)
    captured = 0

    def record(texts: list[str]) -> None:
        nonlocal captured
        for text in texts:
            incident_id = capture(store, edges, text, source, clock)
            captured += 1
            if on_incident is not None:
                on_incident(incident_id)

    while not stop.is_set():
        try:
            item = pending.get(timeout=min(0.5, quiet_s / 2))
        except queue.Empty:
            record(chunker.tick(time.monotonic()))
            continue
        if item is _DONE:
            break
        record(chunker.feed(item, time.monotonic()))
    record(chunker.flush())
    return captured


def watch_metrics(store: EventStore, edges: DeploymentEdges, url: str, stop: threading.Event, *,
                  interval_s: float = 15.0, clock: Callable[[], datetime] = system_clock,
                  on_incident: Callable[[str], None] | None = None, watch: MetricsWatch | None = None) -> int:
    """Scrape /metrics and capture each sustained runtime symptom as an incident."""
    watch = watch or MetricsWatch()
    captured = 0
    for now, body in poll(url, interval_s=interval_s, stop=stop):
        symptom = watch.feed(body, now)
        if symptom:
            incident_id = capture(store, edges, symptom, IncidentSource(kind="metrics", path=url), clock)
            captured += 1
            if on_incident is not None:
                on_incident(incident_id)
    return captured


#: seconds a stopped watch is given to finish its step before it is interrupted where it is
STOP_GRACE_ENV, STOP_GRACE_S = "SELFHEAL_STOP_GRACE_SECONDS", 10.0


def stop_grace_s() -> float:
    """$SELFHEAL_STOP_GRACE_SECONDS, or STOP_GRACE_S; a value that is no number of seconds is
    one clear error naming it."""
    raw = os.environ.get(STOP_GRACE_ENV)
    if raw is None:
        return STOP_GRACE_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise ValueError(f"${STOP_GRACE_ENV}: {raw!r} is not a number of seconds (0 or more)")
    return value


@contextlib.contextmanager
def stop_on_signals(grace_s: float | None = None) -> Iterator[threading.Event]:
    """An event that SIGINT and SIGTERM set, for a watch to stop at its next step (so an
    incident being recorded is finished rather than interrupted wherever the signal lands).

    A step of the loop may be a whole healing run, a canary that waits minutes for a server:
    a stop must not wait for it. So a watch still running `grace_s` after the signal (default
    $SELFHEAL_STOP_GRACE_SECONDS, 10 s), or given a second signal, is interrupted where it is,
    as a crash would be: what was recorded stays, a canary's process group is stopped by its
    backend's `finally`, and the next runner reaps what the interrupted step left (the same path
    as a runner killed mid-canary). The previous handlers come back after. An interrupt before
    they are set ends it quietly."""
    grace = stop_grace_s() if grace_s is None else grace_s
    stop = threading.Event()
    timers: list[threading.Timer] = []

    def on_signal(*_) -> None:
        if stop.is_set():  # a second signal, or the grace is over: at once
            raise KeyboardInterrupt
        stop.set()
        timer = threading.Timer(grace, _thread.interrupt_main)  # delivered as SIGINT: this handler again
        timer.daemon = True
        timer.start()
        timers.append(timer)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    except KeyboardInterrupt:
        stop.set()
    finally:
        for timer in timers:
            timer.cancel()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
