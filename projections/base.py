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

import msgspec

from selfheal.eventstore.store import (
    DATA, DECODE_ERRORS, PLACED, POSITION, SCHEMA_VERSION, TYPE, Decoders, Envelope, EventStore, Recorded,
)

_encode = msgspec.json.Encoder().encode

#: a route's way to read a row whose body needs upcasting (`Decoders.body`)
BODY = object()

S = TypeVar("S")


class Shared(dict):
    """`shared[value]` is the one copy of `value` a read model keeps.

    A log repeats a few values endlessly (names, kinds, statuses, reasons, configs, the
    measurements of canaries that failed alike), and decoding gives every event its own copy:
    folding a million events kept hundreds of thousands of copies of a few values. Only for
    strings and frozen Structs, whose equal values are interchangeable; never for numbers
    (1 == 1.0 == True) nor for anything the read model changes in place. A hit is one C-level
    dict lookup, which is why this is a dict and not a method."""

    def __missing__(self, value):
        self[value] = value
        return value

    def json(self, value):
        """The one copy of a dict or list the read model never changes, found by its JSON
        (which, unlike ==, tells 1 from 1.0 and true)."""
        key = _encode(value)
        found = self.get(key)
        if found is None:
            found = self[key] = value
        return found


class Projection(abc.ABC, Generic[S]):
    #: a stable name, used in CLI output
    name: str = ""
    #: the event types the fold looks at; None means all (the reader filters in SQL)
    types: frozenset[str] | None = None
    #: False when `apply` reads only what an `Envelope` has (type, ids, times), never
    #: `event.event`: it is given an Envelope, or the Recorded where the row is decoded anyway
    #: for another projection, and a row no other projection needs is never decoded
    body: bool = True

    def __init__(self) -> None:
        self.shared = Shared()

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
    view = View(store, [projection])
    view.states[projection.name], view.position = state, position
    view.catch_up(until, progress=progress)
    return view.states[projection.name], view.position


def rebuild(store: EventStore, projection: Projection[S], *, as_of: int | None = None,
            progress: Callable[[int], None] | None = None) -> tuple[S, int]:
    """The state from scratch, as of a position (default: now)."""
    return catch_up(store, projection, projection.initial(), 0, until=as_of, progress=progress)


def _union(types: Iterable[frozenset[str] | None]) -> frozenset[str] | None:
    """Every type in `types`; None (all types) if one of them is None."""
    found: frozenset[str] = frozenset()
    for t in types:
        if t is None:
            return None
        found |= t
    return found


class View:
    """Several projections kept current together, for handlers and CLI queries.

    One pass over the log folds every projection: each row is decoded once, and only if a
    projection that reads bodies looks at its type; `data` is not even fetched for the others.
    """

    def __init__(self, store: EventStore, projections: Iterable[Projection]):
        self.store = store
        self.projections = {p.name: p for p in projections}
        self.states = {name: p.initial() for name, p in self.projections.items()}
        self.position = 0
        self._types = _union(p.types for p in self.projections.values())
        self._bodies = _union(p.types for p in self.projections.values() if p.body)
        self._decoders = Decoders()
        #: type -> (name, apply) of the projections that look at it, and whether one reads bodies
        self._targets: dict[str, tuple[tuple, bool]] = {}
        #: (type, schema_version) -> those folds, and how a row is read for them: its body's
        #: decoder, BODY (decode with upcasting), or None (an Envelope)
        self._routes: dict[tuple[str, int], tuple[tuple, object]] = {}

    def __getitem__(self, name: str):
        return self.states[name]

    def _targets_of(self, type_name: str) -> tuple[tuple, bool]:
        found = self._targets.get(type_name)
        if found is None:
            wanted = [p for p in self.projections.values() if p.types is None or type_name in p.types]
            found = self._targets[type_name] = (tuple((p.name, p.apply) for p in wanted),
                                                any(p.body for p in wanted))
        return found

    def _route(self, row: tuple) -> tuple[tuple, object]:
        key = row[TYPE], row[SCHEMA_VERSION]
        folds, bodies = self._targets_of(row[TYPE])
        if bodies:
            how = self._decoders[key] or BODY
        else:  # not decoded: refuse what decoding would refuse, all the same
            self._decoders.check(*key, row[POSITION])
            how = None
        found = self._routes[key] = (folds, how)
        return found

    def catch_up(self, until: int | None = None, *, progress: Callable[[int], None] | None = None) -> "View":
        """Fold every event after `position` up to `until` (default: the end of the log).

        `progress`, if given, is called with the position reached after each page of events."""
        store = self.store
        head = store.last_position() if until is None else min(until, store.last_position())
        if head <= self.position:
            return self
        # the hot loop of every rebuild: per row, one route lookup, then a decode and a Recorded
        # only where a projection reads the body, else a bare Envelope
        routes, states, body = self._routes, self.states, self._decoders.body
        position = self.position
        try:
            for rows in store.rows(position, types=self._types, until=head, bodies=self._bodies):
                for row in rows:
                    folds, how = routes.get((row[TYPE], row[SCHEMA_VERSION])) or self._route(row)
                    if folds:
                        if how is None:
                            event = Envelope(*row[:PLACED + 1])
                        elif how is BODY:
                            event = Recorded(*row[:PLACED], body(row))
                        else:
                            try:
                                event = Recorded(*row[:PLACED], how(row[DATA]))
                            except DECODE_ERRORS:
                                event = Recorded(*row[:PLACED], body(row))  # a CorruptEvent naming the position
                        for name, apply in folds:
                            states[name] = apply(states[name], event)
                    position = row[POSITION]
                if progress is not None:
                    progress(position)
        finally:
            self.position = position
        # every row up to head is folded; rows of types no projection reads were not fetched
        self.position = head
        return self
