"""The typed log: Structs in, Structs out, over any Recorder."""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime

import msgspec

from selfheal.eventstore.recorder import (
    AppendRequest, CheckpointAdvance, NewEvent, Recorder, StoredEvent, parse_utc, utc_iso,
)
from selfheal.schemas.codec import decode, encode, fast_decoder
from selfheal.schemas.events import Event

_NAMESPACE = uuid.UUID("6c8f6c1e-8a43-4f0e-9d7c-5e1f3b2a9d10")


def derived_id(*parts: str) -> str:
    """A deterministic event id: the same cause and role always give the same id, so a
    handler that runs again after a crash re-emits ids the store already has (and skips)."""
    return str(uuid.uuid5(_NAMESPACE, "\x1f".join(parts)))


def new_id() -> str:
    return str(uuid.uuid4())


class Pending(msgspec.Struct, frozen=True, kw_only=True):
    """An event with its envelope, ready to append."""

    event: Event
    event_id: str
    occurred_at: datetime
    correlation_id: str | None = None
    causation_id: str | None = None

    def encoded(self) -> NewEvent:
        return NewEvent(
            event_id=self.event_id, type=type(self.event).__name__,
            schema_version=self.event.SCHEMA_VERSION, occurred_at=utc_iso(self.occurred_at),
            data=encode(self.event), correlation_id=self.correlation_id, causation_id=self.causation_id,
        )


class Recorded(msgspec.Struct, frozen=True):
    """An event as read back: its place in the log and its typed body."""

    position: int
    event_id: str
    stream: str
    version: int
    occurred_at: str
    recorded_at: str
    correlation_id: str | None
    causation_id: str | None
    event: Event

    @property
    def type(self) -> str:
        return type(self.event).__name__

    @property
    def occurred(self) -> datetime:
        return parse_utc(self.occurred_at)

    def follow(self, event: Event, role: str, *, occurred_at: datetime | None = None) -> Pending:
        """An event caused by this one: same correlation, this event as its cause, its time
        (handlers never read the wall clock), and an id derived from this event and `role`."""
        return Pending(
            event=event, event_id=derived_id(self.event_id, role),
            occurred_at=occurred_at or self.occurred,
            correlation_id=self.correlation_id or self.event_id, causation_id=self.event_id,
        )


def typed(row: StoredEvent) -> Recorded:
    event = decode(row.type, row.schema_version, row.data, where=f"position {row.position}: ")
    return Recorded(row.position, row.event_id, row.stream, row.version, row.occurred_at,
                    row.recorded_at, row.correlation_id, row.causation_id, event)


class EventStore:
    def __init__(self, recorder: Recorder):
        self.recorder = recorder

    def append(self, stream: str, events: Sequence[Pending], expected_version: int | None = None) -> list[int]:
        return self.recorder.append(stream, [p.encoded() for p in events], expected_version)

    def append_many(self, batches: Sequence[tuple[str, Sequence[Pending]]],
                    checkpoints: Sequence[CheckpointAdvance] = ()) -> list[list[int]]:
        requests = [AppendRequest(stream, [p.encoded() for p in events]) for stream, events in batches]
        return self.recorder.append_many(requests, checkpoints)

    def read(self, after: int = 0, *, types: Iterable[str | type] | None = None,
             until: int | None = None) -> Iterator[Recorded]:
        names = None if types is None else [t if isinstance(t, str) else t.__name__ for t in types]
        # the hot path of every rebuild: one cached decoder per (type, version), no upcasting
        decoders: dict[tuple[str, int], object] = {}
        for row in self.recorder.read(after, types=names, until=until):
            key = (row.type, row.schema_version)
            fast = decoders.get(key, False)
            if fast is False:
                fast = decoders[key] = fast_decoder(*key)
            if fast is None:
                yield typed(row)
                continue
            try:
                event = fast(row.data)
            except (msgspec.DecodeError, msgspec.ValidationError):
                yield typed(row)  # raises CorruptEvent with the position
                continue
            yield Recorded(row.position, row.event_id, row.stream, row.version, row.occurred_at,
                           row.recorded_at, row.correlation_id, row.causation_id, event)

    def read_stream(self, stream: str) -> Iterator[Recorded]:
        return map(typed, self.recorder.read_stream(stream))

    def get(self, event_id: str) -> Recorded | None:
        row = self.recorder.get(event_id)
        return typed(row) if row else None

    def last_position(self) -> int:
        return self.recorder.last_position()

    def as_of(self, when: int | str | datetime | None) -> int:
        """A position for `--as-of`: a position as is, or the last one recorded by a time."""
        if when is None:
            return self.last_position()
        if isinstance(when, int):
            return min(when, self.last_position())
        if isinstance(when, str):
            when = parse_utc(when)
        return self.recorder.position_at(utc_iso(when))

    def close(self) -> None:
        self.recorder.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_store(path: str | os.PathLike, *, create: bool = False, synchronous: str = "FULL") -> EventStore:
    from selfheal.eventstore.sqlite import SQLiteRecorder

    return EventStore(SQLiteRecorder(path, create=create, synchronous=synchronous))


def memory_store(clock=None) -> EventStore:
    from selfheal.eventstore.memory import InMemoryRecorder

    return EventStore(InMemoryRecorder(clock=clock) if clock else InMemoryRecorder())
