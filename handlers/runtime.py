"""The handler runtime: react to events, append what handlers emit, exactly once.

A handler maps one event, plus read access to projections, to new events. The runner
appends a handler's output and moves that handler's checkpoint in the same transaction,
and the checkpoint move is a compare-and-set: a crash before the commit leaves the event
unhandled (it is handled again on restart, and nothing of the first try was written); a
crash after it leaves it handled; and two runners on one log never both commit a handling
of the same event.

What handlers see. Events are handled strictly in log order, and every handler's output is
appended before the next event is handled. The view a handler reads is the projections
folded over everything recorded before its output for the event: the log as it stands at
that moment, which includes the decisions already taken for earlier events (so the second
of two identical incidents finds the first one's intent). Because that moment is fixed by
the log's contents and order alone, a replay of the same inputs reproduces every decision.
Handlers never read the wall clock: times come from the event (`Recorded.follow`).
"""
from __future__ import annotations

import abc
import contextlib
import fcntl
from pathlib import Path
from collections.abc import Iterable, Sequence

import msgspec

from selfheal.eventstore.errors import CheckpointConflict
from selfheal.eventstore.recorder import CheckpointAdvance
from selfheal.eventstore.store import EventStore, Pending, Recorded
from selfheal.projections.base import Projection, View

#: what a handler returns: events to append, each with its stream
Emitted = Sequence[tuple[str, Pending]]


class Handler(abc.ABC):
    #: stable name: the key of its checkpoint, so renaming a handler re-handles the log
    name: str = ""
    #: event type names this handler reacts to
    subscribes_to: frozenset[str] = frozenset()

    @abc.abstractmethod
    def handle(self, event: Recorded, view: View) -> Emitted:
        ...


class RunReport(msgspec.Struct):
    handled: int = 0
    emitted: int = 0
    conflicts: int = 0
    position: int = 0


_held: dict[str, int] = {}


@contextlib.contextmanager
def _exclusive(store: EventStore):
    """An exclusive lock between processes; re-entrant within one (runners nested in a test)."""
    path = getattr(store.recorder, "path", None)
    if path is None:  # an in-memory log lives in one process
        yield
        return
    key = f"{Path(path).resolve()}.runner-lock"
    if _held.get(key):
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    with open(key, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _held[key] = 1
        try:
            yield
        finally:
            _held[key] = 0
            fcntl.flock(lock, fcntl.LOCK_UN)


def _group(emitted: Emitted) -> list[tuple[str, list[Pending]]]:
    batches: dict[str, list[Pending]] = {}
    for stream, pending in emitted:
        batches.setdefault(stream, []).append(pending)
    return list(batches.items())


class Runner:
    def __init__(self, store: EventStore, handlers: Iterable[Handler], projections: Iterable[Projection] = (),
                 page: int = 500):
        self.store = store
        self.handlers = list(handlers)
        names = [h.name for h in self.handlers]
        if len(set(names)) != len(names) or not all(names):
            raise ValueError(f"handler names must be unique and non-empty: {names}")
        self.view = View(store, projections)
        self.page = page

    def run_until_idle(self, max_events: int | None = None) -> RunReport:
        """Handle every pending event, and the events that produces, until none is left.

        `max_events` bounds how many log positions are examined (for `--follow` loops).
        Runners of one log file take turns (an exclusive lock beside it): the checkpoint
        compare-and-set keeps the log exact on its own, but an effect (a canary) happens
        before its commit, so two runners must never work on the same event at once.
        """
        with _exclusive(self.store):
            return self._run(max_events)

    def _run(self, max_events: int | None) -> RunReport:
        report = RunReport()
        recorder = self.store.recorder
        stored = recorder.checkpoints()
        committed = {h.name: stored.get(h.name, 0) for h in self.handlers}
        cursor = min(committed.values(), default=0)
        examined = 0
        while True:
            page = list(self.store.read(cursor, until=cursor + self.page))
            if not page:
                break
            behind = False
            for event in page:
                for handler in self.handlers:
                    if committed[handler.name] < event.position and event.type in handler.subscribes_to:
                        self._handle(handler, event, committed, report)
                        behind = behind or committed[handler.name] < event.position
                if behind:
                    break
                cursor = report.position = event.position
                examined += 1
                if max_events is not None and examined >= max_events:
                    break
            if behind:
                # another runner's checkpoint stands below this event: go back to it, so no
                # event between the two is skipped
                cursor = min(committed.values())
                continue
            # handlers that had nothing to do on this page move past it in one write each
            for handler in self.handlers:
                if committed[handler.name] < cursor:
                    self._advance(handler.name, committed, cursor, (), report)
            if max_events is not None and examined >= max_events:
                break
        return report

    def _handle(self, handler: Handler, event: Recorded, committed: dict[str, int], report: RunReport) -> None:
        self.view.catch_up()
        emitted = handler.handle(event, self.view)
        if self._advance(handler.name, committed, event.position, emitted, report):
            report.handled += 1
            report.emitted += len(emitted)

    def _advance(self, name: str, committed: dict[str, int], position: int, emitted: Emitted,
                 report: RunReport) -> bool:
        try:
            self.store.append_many(_group(emitted), [CheckpointAdvance(name, committed[name], position)])
        except CheckpointConflict as conflict:
            # another runner moved this checkpoint: drop our output and take its position as
            # the truth, ahead of ours or behind it (then the caller goes back to it)
            report.conflicts += 1
            committed[name] = conflict.actual
            return False
        committed[name] = position
        return True
