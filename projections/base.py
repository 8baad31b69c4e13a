"""Projections: an initial state and a pure fold over events.

A projection never reads the clock or the outside world; everything it knows comes from
the events, so rebuilding from scratch, catching up incrementally and evaluating as of a
past position all give the same answer for the same prefix of the log.

`apply` may update the state in place and return it: the fold stays linear over millions of
events instead of copying a growing read model per event. Whoever needs an older state asks
for a rebuild as of that position rather than keeping a reference.
"""
from __future__ import annotations

import abc
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from selfheal.eventstore.store import EventStore, Recorded

S = TypeVar("S")


class Projection(abc.ABC, Generic[S]):
    #: a stable name, used in CLI output
    name: str = ""
    #: the event types the fold looks at; None means all (the reader filters in SQL)
    types: frozenset[str] | None = None

    @abc.abstractmethod
    def initial(self) -> S:
        ...

    @abc.abstractmethod
    def apply(self, state: S, event: Recorded) -> S:
        """The next state: deterministic, no I/O, no clock; may reuse `state`."""

    def fold(self, state: S, events: Iterable[Recorded]) -> S:
        apply, types = self.apply, self.types
        for event in events:
            if types is None or event.type in types:
                state = apply(state, event)
        return state


def catch_up(store: EventStore, projection: Projection[S], state: S, position: int,
             until: int | None = None, progress: Callable[[int], None] | None = None) -> tuple[S, int]:
    """Fold the events after `position` (up to `until`) into `state`; returns (state, position)."""
    last = position
    apply = projection.apply
    for event in store.read(position, types=projection.types, until=until):
        state = apply(state, event)
        last = event.position
        if progress is not None:
            progress(last)
    head = store.last_position() if until is None else min(until, store.last_position())
    return state, max(last, head)


def rebuild(store: EventStore, projection: Projection[S], *, as_of: int | None = None,
            progress: Callable[[int], None] | None = None) -> tuple[S, int]:
    """The state from scratch, as of a position (default: now)."""
    return catch_up(store, projection, projection.initial(), 0, until=as_of, progress=progress)


class View:
    """Several projections kept current together, for handlers and CLI queries."""

    def __init__(self, store: EventStore, projections: Iterable[Projection]):
        self.store = store
        self.projections = {p.name: p for p in projections}
        self.states = {name: p.initial() for name, p in self.projections.items()}
        self.position = 0

    def __getitem__(self, name: str):
        return self.states[name]

    def advance(self, event: Recorded) -> None:
        for name, projection in self.projections.items():
            if projection.types is None or event.type in projection.types:
                self.states[name] = projection.apply(self.states[name], event)
        self.position = event.position

    def catch_up(self, until: int | None = None) -> "View":
        for event in self.store.read(self.position, until=until):
            self.advance(event)
        return self
