"""The handler runtime: reactors decide, activities act, the runner records both exactly once.

Two kinds of handler, told apart by their type:

- A **Reactor** decides. An event and a read-only view of the projections in, events out:
  no I/O, no clock, no store. Times come from the event (`Recorded.follow`).
- An **Activity** acts on the world through one port of its deployment (`port`: the canary
  backend, the GPU inventory, the vLLM config file, the reloader, the alert sinks). It is
  triggered only by a *request* event that a reactor (or an earlier activity) recorded, so
  the log says an effect was asked for before it happens; the runner performs it and records
  its result before anything depends on it. Facts an activity learns while it acts (a canary
  process now exists) go through `Progress.record`, appended by the runner at once. Replay
  tells activities apart by type: `replayable` ones are answered from recorded results
  (recorded ports), the others reach production and are never replayed.

The runner. Events are handled strictly in log order, and every handler's output is
appended before the next event is handled. The view a handler reads is the projections
folded over everything recorded before its output for the event, so a replay of the same
inputs reproduces every decision. A handler's output and its checkpoint move go in one
transaction, a compare-and-set: a crash before the commit leaves the event unhandled (it is
handled again on restart, and nothing of the first try was written); a crash after it leaves
it handled; two runners on one log never both commit a handling of the same event. A
handler with nothing to record costs no commit: its checkpoint moves in memory and rides
along with the next transaction (or one final one when the runner goes idle). After a crash
such an event is offered again, with a view that may now hold later events: the loop's
reactors answer it the same (their empty answers rest on facts that do not change back; see
RELIABILITY.md), and an activity that records nothing did nothing.

Checkpoints are not the only guard. A handler's answer to an event is found in the log itself:
an event caused by it (causation and correlation, as `Recorded.follow` sets them; the runner
fills in what a handler left out) of a type the handler answers with (`Handler.answers`: what
it records, less the `facts` an activity records while it acts). A handler whose answer is
there does not handle that event again, whatever its checkpoint says: a checkpoint moved back
or lost (the table is outside the hash chain) repeats no effect and no decision. A request
that has only facts (a CanaryLaunched, no CanaryCompleted) was cut short, and is acted on again.
"""
from __future__ import annotations

import abc
import contextlib
import fcntl
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import ClassVar

import msgspec

from selfheal.eventstore.errors import CheckpointConflict, StoreError
from selfheal.eventstore.recorder import CheckpointAdvance, EventFilter
from selfheal.eventstore.sqlite import refuse_other_names
from selfheal.eventstore.store import EventStore, Pending, Recorded
from selfheal.handlers.leases import leased
from selfheal.projections.base import Projection, View

#: what a handler returns: events to append, each with its stream
Emitted = Sequence[tuple[str, Pending]]


class Handler(abc.ABC):
    #: stable name: the key of its checkpoint, so renaming a handler re-handles the log
    name: ClassVar[str] = ""
    #: the event classes this handler reacts to
    subscribes_to: ClassVar[tuple[type, ...]] = ()
    #: the event classes it may record; the runner refuses anything else
    emits: ClassVar[tuple[type, ...]] = ()

    @classmethod
    def subscribed_names(cls) -> frozenset[str]:
        return frozenset(t.__name__ for t in cls.subscribes_to)

    @classmethod
    def answers(cls) -> tuple[type, ...]:
        """The event classes that, caused by an event, are this handler's answer to it: once one
        is in the log, the event has been handled (the runner never handles it again)."""
        return cls.emits

    @abc.abstractmethod
    def __call__(self, event: Recorded, view: View, progress: "Progress") -> Emitted:
        """What the runner calls: a reactor's decision or an activity's performance."""


class Reactor(Handler):
    """Decision code: event + view in, events out; no I/O, no clock, no store."""

    @abc.abstractmethod
    def react(self, event: Recorded, view: View) -> Emitted:
        ...

    def __call__(self, event: Recorded, view: View, progress: "Progress") -> Emitted:
        return self.react(event, view)


class Activity(Handler):
    """An effect on the world, performed by the runner through one port of the deployment."""

    #: the DeploymentEdges field it acts through
    port: ClassVar[str] = ""
    #: True: replay answers it from recorded results; False: it reaches production, never replayed
    replayable: ClassVar[bool] = False
    #: the event classes it records through `Progress` while it acts: facts (a canary process
    #: now exists), not its answer; a request with only these in the log was cut short
    facts: ClassVar[tuple[type, ...]] = ()

    @classmethod
    def answers(cls) -> tuple[type, ...]:
        return tuple(t for t in cls.emits if t not in cls.facts)

    @abc.abstractmethod
    def perform(self, event: Recorded, view: View, progress: "Progress") -> Emitted:
        ...

    def __call__(self, event: Recorded, view: View, progress: "Progress") -> Emitted:
        return self.perform(event, view, progress)


class Progress:
    """What an activity may ask of the runner while it acts: record a fact at once (durable
    before the activity goes on), and read what a stream already holds."""

    def __init__(self, store: EventStore, handler: Handler):
        self._store, self._handler = store, handler

    def record(self, stream: str, pending: Pending) -> None:
        _check_declared(self._handler, [(stream, pending)])
        facts = getattr(self._handler, "facts", ())
        if facts and not isinstance(pending.event, facts):
            raise UndeclaredEvent(f"handler {self._handler.name!r} recorded {type(pending.event).__name__} while it "
                                  "acted, which its `facts` does not declare (it would read as its answer)")
        self._store.append_many([(stream, [pending])])

    def recorded(self, stream: str) -> Iterator[Recorded]:
        return self._store.read_stream(stream)


class UndeclaredEvent(TypeError):
    """A handler emitted an event class its declaration does not list (a programming error)."""


def _check_declared(handler: Handler, emitted: Emitted) -> None:
    for _, pending in emitted:
        if not isinstance(pending.event, handler.emits):
            raise UndeclaredEvent(f"handler {handler.name!r} recorded {type(pending.event).__name__}, "
                                  "which its `emits` does not declare")


class RunReport(msgspec.Struct):
    handled: int = 0
    emitted: int = 0
    conflicts: int = 0
    position: int = 0
    #: transactions this run committed (outputs and checkpoint moves), for the benchmarks
    transactions: int = 0
    #: the log's last position when the run went idle
    head: int = 0


_held: dict[str, int] = {}


@contextlib.contextmanager
def _exclusive(store: EventStore):
    """An exclusive lock between processes; re-entrant within one (runners nested in a test).

    The lock sits beside the log's name, so a log with a second name (a hard link) is refused
    here as it is when it is opened: a runner that opened it before the link appeared stops
    too, instead of sharing the log with a runner that came in through the other name."""
    path = getattr(store.recorder, "path", None)
    if path is None:  # an in-memory log lives in one process
        yield
        return
    refuse_other_names(path)
    # a runner records what it does: a log that cannot be written stops it before any effect
    getattr(store.recorder, "check_writable", lambda: None)()
    key = f"{Path(path).resolve()}.runner-lock"
    if _held.get(key):
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    try:
        lock = open(key, "a")
    except OSError as exc:
        raise StoreError(f"{key}: cannot create the runner lock beside the log ({exc.strerror}); "
                         "a runner needs to write there") from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _held[key] = 1
        try:
            yield
        finally:
            _held[key] = 0
            fcntl.flock(lock, fcntl.LOCK_UN)


def _caused_by(event: Recorded, pending: Pending) -> Pending:
    """`pending` linked to the event it answers, where its handler left the links out, so the
    log can tell it is that event's answer (`Runner._answered`)."""
    if pending.causation_id is not None and pending.correlation_id is not None:
        return pending
    return msgspec.structs.replace(pending, causation_id=pending.causation_id or event.event_id,
                                   correlation_id=pending.correlation_id or event.correlation_id or event.event_id)


def _group(emitted: Emitted) -> list[tuple[str, list[Pending]]]:
    batches: dict[str, list[Pending]] = {}
    for stream, pending in emitted:
        batches.setdefault(stream, []).append(pending)
    return list(batches.items())


class _Checkpoints:
    """Each handler's position: `durable` as the log holds it, `done` as this runner has
    handled it. `done` runs ahead for handlers with nothing to record; every transaction
    carries the moves that close the gap."""

    def __init__(self, stored: dict[str, int], names: Iterable[str]):
        self.durable = {name: stored.get(name, 0) for name in names}
        self.done = dict(self.durable)

    def lagging(self, owner: str | None = None) -> list[CheckpointAdvance]:
        """The moves that close every gap; the owner's first (the handler whose output they carry)."""
        names = sorted(self.done, key=lambda name: name != owner)
        return [CheckpointAdvance(name, self.durable[name], self.done[name])
                for name in names if self.done[name] != self.durable[name]]

    def committed(self, moves: Sequence[CheckpointAdvance]) -> None:
        for move in moves:
            self.durable[move.handler] = move.position

    def reset(self, stored: dict[str, int]) -> None:
        """Another runner moved a checkpoint: the log is the truth for every handler."""
        for name in self.done:
            self.durable[name] = self.done[name] = stored.get(name, 0)


class Runner:
    def __init__(self, store: EventStore, handlers: Iterable[Handler], projections: Iterable[Projection] = (),
                 page: int = 500, scope: Iterable[str] | None = None):
        self.store = store
        #: on a server log shared by a fleet: the deployments this runner heals. It takes their
        #: leases, handles only their events, and keeps checkpoints of its own for them, so
        #: nodes heal different deployments at once (on a file log runners take turns instead)
        self.scope = (tuple(sorted(scope)) if scope is not None and hasattr(store.recorder, "acquire_lease")
                      else None)
        self._deployments: dict[str, str | None] = {}
        self.handlers = list(handlers)
        #: handler name -> the name of its checkpoint (scoped on a fleet's log)
        self._marks = {h.name: self._checkpoint_name(h) for h in self.handlers}
        names = [h.name for h in self.handlers]
        if len(set(names)) != len(names) or not all(names):
            raise ValueError(f"handler names must be unique and non-empty: {names}")
        self._subscribed = [(h, h.subscribed_names()) for h in self.handlers]
        self._answers = {h.name: tuple(sorted(t.__name__ for t in h.answers())) for h in self.handlers}
        self._progress = {h.name: Progress(store, h) for h in self.handlers}
        self.view = View(store, projections)
        self.page = page

    def run_until_idle(self, max_events: int | None = None) -> RunReport:
        """Handle every pending event, and the events that produces, until none is left.

        `max_events` bounds how many log positions are examined (for `--follow` loops).
        Runners of one log file take turns (an exclusive lock beside it): the checkpoint
        compare-and-set keeps the log exact on its own, but an effect (a canary) happens
        before its commit, so two runners must never work on the same event at once.
        """
        if hasattr(self.store.recorder, "acquire_lease"):
            names = [f"deployment:{d}" for d in self.scope] if self.scope is not None else ["log"]
            with leased(self.store, names):
                return self._run(max_events)
        with _exclusive(self.store):
            return self._run(max_events)

    def _checkpoint_name(self, handler: Handler) -> str:
        return handler.name if self.scope is None else f"{handler.name}@{','.join(self.scope)}"

    def _in_scope(self, event: Recorded) -> bool:
        """Whether this runner handles `event`: its deployment's, or its chain's first event's
        (a canary or a promotion names its run, not its deployment). An event of no deployment
        (none in the loop today) is every runner's: the answer check keeps it handled once."""
        if self.scope is None:
            return True
        deployment = getattr(event.event, "deployment", None)
        if deployment is None and event.correlation_id:
            if event.correlation_id not in self._deployments:
                root = self.store.get(event.correlation_id)
                self._deployments[event.correlation_id] = getattr(root.event, "deployment", None) if root else None
            deployment = self._deployments[event.correlation_id]
        return deployment is None or deployment in self.scope

    def _run(self, max_events: int | None) -> RunReport:
        report = RunReport()
        # answers come only from runners, which take turns: an event recorded after this one
        # started (under its lock) cannot have been answered by another, so it is not looked up
        self._answerable_until = self.store.last_position()
        marks = _Checkpoints(self.store.recorder.checkpoints(), self._marks.values())
        cursor = min(marks.done.values(), default=0)
        examined = 0
        while True:
            page = list(self.store.read(cursor, until=cursor + self.page))
            if not page:
                break
            restart = False
            for event in page:
                for handler, names in self._subscribed:
                    mark = self._marks[handler.name]
                    if marks.done[mark] >= event.position:
                        continue
                    if (event.type in names and self._in_scope(event)
                            and not self._handle(handler, event, marks, report)):
                        restart = True
                        break
                    marks.done[mark] = event.position
                if restart:
                    break
                cursor = report.position = event.position
                examined += 1
                if max_events is not None and examined >= max_events:
                    break
            if restart:
                # another runner's checkpoint stands elsewhere: go back to the lowest, so no
                # event between the two is skipped
                cursor = min(marks.done.values())
                self._answerable_until = self.store.last_position()  # another runner was at work
                continue
            if max_events is not None and examined >= max_events:
                break
        self._commit((), marks, report)  # the moves of handlers that had nothing to record
        return report

    def _answered(self, handler: Handler, event: Recorded) -> bool:
        """Whether the log already holds `handler`'s answer to `event`: then it was handled,
        wherever its checkpoint stands (one indexed read of the event's correlation)."""
        names = self._answers[handler.name]
        # a fleet's runners of other deployments work meanwhile: the shortcut holds for turns only
        if not names or (self.scope is None and event.position > self._answerable_until):
            return False
        where = EventFilter(after=event.position, correlation_id=event.correlation_id or event.event_id, types=names)
        return any(row.causation_id == event.event_id for row in self.store.recorder.query(where))

    def _handle(self, handler: Handler, event: Recorded, marks: _Checkpoints, report: RunReport) -> bool:
        if self._answered(handler, event):
            return True  # never act or decide twice: the checkpoint moves with a later transaction
        self.view.catch_up()
        emitted = [(stream, _caused_by(event, pending))
                   for stream, pending in handler(event, self.view, self._progress[handler.name])]
        _check_declared(handler, emitted)
        if not emitted:
            report.handled += 1
            return True  # nothing to record: the checkpoint moves with a later transaction
        marks.done[self._marks[handler.name]] = event.position
        if not self._commit(emitted, marks, report, owner=self._marks[handler.name]):
            return False
        report.handled += 1
        report.emitted += len(emitted)
        return True

    def _commit(self, emitted: Emitted, marks: _Checkpoints, report: RunReport, owner: str | None = None) -> bool:
        moves = marks.lagging(owner)
        if not emitted and not moves:
            return True
        try:
            self.store.append_many(_group(emitted), moves)
        except CheckpointConflict:
            # another runner moved a checkpoint: drop our output and take the log as the truth
            report.conflicts += 1
            marks.reset(self.store.recorder.checkpoints())
            return False
        marks.committed(moves)
        report.transactions += 1
        return True
