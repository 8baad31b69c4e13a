"""The typed log: Structs in, Structs out, over any Recorder."""
from __future__ import annotations

import operator
import os
import uuid
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime

import msgspec

from selfheal.eventstore.errors import CorruptEvent, StoreError
from selfheal.eventstore.memory import InMemoryRecorder
from selfheal.eventstore.recorder import (
    AppendRequest, CheckpointAdvance, NewEvent, Recorder, StoredEvent, parse_utc, utc_iso,
)
from selfheal.eventstore.sqlite import SQLiteRecorder
from selfheal.eventstore import sealing
from selfheal.eventstore.codec import decode, encode, fast_decoder, readable, untyped
from selfheal.schemas.events import EVENT_TYPES, Event, IncidentForgotten
from selfheal.schemas.redaction import Redactor

_NAMESPACE = uuid.UUID("6c8f6c1e-8a43-4f0e-9d7c-5e1f3b2a9d10")


def _names(types: Iterable[str | type] | None) -> list[str] | None:
    return None if types is None else [t if isinstance(t, str) else t.__name__ for t in types]


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

    def encoded(self, event: Event | None = None, key: bytes | None = None) -> NewEvent:
        """The row to append: `event` (this one's body as the store records it: redacted,
        sealed) under this envelope, and the key of its sealed fields."""
        event = self.event if event is None else event
        return NewEvent(
            event_id=self.event_id, type=type(event).__name__,
            schema_version=event.SCHEMA_VERSION, occurred_at=utc_iso(self.occurred_at),
            data=encode(event), correlation_id=self.correlation_id, causation_id=self.causation_id, key=key,
        )


class Placed(msgspec.Struct, frozen=True):
    """Where and when an event stands in the log: what Recorded and Envelope share."""

    position: int
    event_id: str
    stream: str
    version: int
    occurred_at: str
    recorded_at: str
    correlation_id: str | None
    causation_id: str | None

    @property
    def occurred(self) -> datetime:
        return parse_utc(self.occurred_at)


class Recorded(Placed, frozen=True):
    """An event as read back: its place in the log and its typed body."""

    event: Event

    @property
    def type(self) -> str:
        return type(self.event).__name__

    def follow(self, event: Event, role: str, *, occurred_at: datetime | None = None) -> Pending:
        """An event caused by this one: same correlation, this event as its cause, its time
        (handlers never read the wall clock), and an id derived from this event and `role`."""
        return Pending(
            event=event, event_id=derived_id(self.event_id, role),
            occurred_at=occurred_at or self.occurred,
            correlation_id=self.correlation_id or self.event_id, causation_id=self.event_id,
        )


class Envelope(Placed, frozen=True):
    """An event as read back without its body: what a fold that counts or times events needs
    (see `Projection.body`). Reading it costs no decoding, and on SQLite no body is fetched."""

    type: str


#: the columns a typed read fetches, in this order: where the event stands (a Recorded but
#: its body), then what decodes the body. `row[:PLACED]` is a Recorded's envelope, and
#: `row[:PLACED + 1]` an Envelope's.
READ_COLUMNS: tuple[str, ...] = (*Placed.__struct_fields__, "type", "schema_version", "data")
PLACED = len(Placed.__struct_fields__)
POSITION, TYPE, SCHEMA_VERSION, DATA = (READ_COLUMNS.index(c) for c in ("position", "type", "schema_version", "data"))


#: what a decoder raises for a body it cannot read (TypeError: no body at all; RecursionError:
#: one nested too deep, even in a field the type does not know). `Decoders.body` says which, and where
DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, TypeError, RecursionError)


class Decoders(dict):
    """(type, schema_version) -> the decoder of bodies already at the current version, or None
    (those take `decode`, which upcasts): one lookup per row on the hot path of every read."""

    def __missing__(self, key: tuple[str, int]):
        found = self[key] = fast_decoder(*key)
        return found

    def body(self, row: tuple) -> Event:
        """The typed event of a row of READ_COLUMNS; a body that does not decode is a
        CorruptEvent (an unknown type or newer version an UnknownEventType) naming the position."""
        fast = self[row[TYPE], row[SCHEMA_VERSION]]
        if fast is not None:
            try:
                return fast(row[DATA])
            except DECODE_ERRORS:
                pass  # decode says what is wrong, and where
        if row[DATA] is None:  # a body read where it was asked for is empty only in a damaged file
            self.check(row[TYPE], row[SCHEMA_VERSION], row[POSITION])
            raise CorruptEvent(f"position {row[POSITION]}: damaged row ({row[TYPE]} has no body); "
                               "`selfheal verify` tells where the log breaks")
        return decode(row[TYPE], row[SCHEMA_VERSION], row[DATA], where=f"position {row[POSITION]}: ")

    def check(self, type_name: str, schema_version: int, position: int) -> None:
        """Refuse a type or version this build cannot read, as decoding it would, without a body."""
        if self[type_name, schema_version] is None:
            readable(type_name, schema_version, where=f"position {position}: ")


_placed = operator.attrgetter(*Placed.__struct_fields__)
#: the event types with sealed fields, and where a read row holds its event id
_SEALED_TYPES = frozenset(cls for cls in EVENT_TYPES.values() if sealing.sealed_fields(cls))
_EVENT_ID = Placed.__struct_fields__.index("event_id")


def typed(row: StoredEvent) -> Recorded:
    """A row's typed event, its sealed fields as the row holds them (rows from `audit.events`
    are opened already; `EventStore.typed` opens a row read from the recorder)."""
    event = decode(row.type, row.schema_version, row.data, where=f"position {row.position}: ")
    return Recorded(*_placed(row), event)


class EventStore:
    """Typed events over a recorder. Every event passes `redactor` before it is recorded (the
    one place every path to the log goes through), and its SEALED fields are sealed under a
    key of its own; reads open them again (eventstore/sealing.py)."""

    def __init__(self, recorder: Recorder, redactor: Redactor | None = None):
        self.recorder = recorder
        self._redactor = redactor
        self._redaction: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())
        #: sealed events opened lately, by event id: a runner reads an incident several times
        self._opened_events: dict[str, Event] = {}

    @property
    def redactor(self) -> Redactor:
        """The built-in credential patterns, keyed with this log's own secret, until
        `redact_with` adds the operator's patterns and the secrets the settings hold."""
        if self._redactor is None:
            # built on first use: a command that records nothing never reads (or makes) the key
            self._redactor = Redactor(self.recorder.secret("redaction"), *self._redaction)
        return self._redactor

    def redact_with(self, patterns: Sequence[str] = (), known: Iterable[str] = ()) -> None:
        """Redact with the operator's `patterns` and the `known` secret values too, from now on."""
        self._redaction, self._redactor = (tuple(patterns), tuple(known)), None

    def _redacted(self, event: Event) -> Event:
        keep = type(event).VERBATIM
        if not keep:
            return self.redactor.value(event)
        changes = {}
        for name in event.__struct_fields__:
            value = getattr(event, name)
            if name not in keep and (redacted := self.redactor.value(value)) is not value:
                changes[name] = redacted
        return msgspec.structs.replace(event, **changes) if changes else event

    def _row(self, pending: Pending) -> NewEvent:
        event = self._redacted(pending.event)
        if type(event) not in _SEALED_TYPES:
            return pending.encoded(event)
        key = sealing.new_key()
        return pending.encoded(sealing.sealed(event, key), key)

    def _opened(self, event: Event, event_id: str) -> Event:
        found = self._opened_events.get(event_id)
        if found is None:
            found = sealing.opened(event, self.recorder.event_key(event_id))
            if len(self._opened_events) >= 256:
                self._opened_events.clear()
            self._opened_events[event_id] = found
        return found

    def typed(self, row: StoredEvent) -> Recorded:
        recorded = typed(row)
        if type(recorded.event) in _SEALED_TYPES:
            return msgspec.structs.replace(recorded, event=self._opened(recorded.event, row.event_id))
        return recorded

    def opened_row(self, row: StoredEvent) -> StoredEvent:
        """`row` with the sealed fields of its body opened (FORGOTTEN where the key is gone):
        what the audit commands show and a bundle carries. Its hash is the stored row's. A body
        that does not decode has nothing to open: it is returned as stored (`verify` reports it)."""
        fields = sealing.sealed_fields(EVENT_TYPES.get(row.type, Event))
        if not fields:
            return row
        try:
            body = untyped(row.data, where=f"position {row.position}: ")
        except CorruptEvent:
            return row  # nothing to open: shown as stored (`verify` reports the row)
        if not isinstance(body, dict):
            return row
        key = self.recorder.event_key(row.event_id)
        for name in fields:
            if sealing.is_sealed(body.get(name)):
                body[name] = sealing.unseal(body[name], key)
        return msgspec.structs.replace(row, data=msgspec.json.encode(body).decode())

    def append(self, stream: str, events: Sequence[Pending], expected_version: int | None = None) -> list[int]:
        return self.recorder.append(stream, [self._row(p) for p in events], expected_version)

    def append_many(self, batches: Sequence[tuple[str, Sequence[Pending]]],
                    checkpoints: Sequence[CheckpointAdvance] = ()) -> list[list[int]]:
        requests = [AppendRequest(stream, [self._row(p) for p in events]) for stream, events in batches]
        return self.recorder.append_many(requests, checkpoints)

    def forget(self, incident: Recorded, by: str, at: datetime, reason: str = "") -> int:
        """Destroy the key of `incident`'s sealed text and record that it was (IncidentForgotten),
        in one transaction; returns the record's position."""
        e = incident.event
        record = Pending(event=IncidentForgotten(incident_id=e.incident_id, event_id=incident.event_id, by=by,
                                                 reason=reason),
                         event_id=derived_id(incident.event_id, "forgotten"), occurred_at=at,
                         correlation_id=incident.correlation_id or incident.event_id, causation_id=incident.event_id)
        self._opened_events.pop(incident.event_id, None)
        return self.recorder.forget(incident.event_id,
                                    AppendRequest(f"incident-{e.incident_id}", [self._row(record)]))[0]

    def read(self, after: int = 0, *, types: Iterable[str | type] | None = None,
             until: int | None = None) -> Iterator[Recorded]:
        decoders = Decoders()
        for rows in self.rows(after, types=types, until=until):
            for row in rows:
                # `decoders.body(row)`, its common case inline: no call per row but the decoder's
                fast = decoders[row[TYPE], row[SCHEMA_VERSION]]
                if fast is None:
                    event = decoders.body(row)  # upcasts
                else:
                    try:
                        event = fast(row[DATA])
                    except DECODE_ERRORS:
                        event = decoders.body(row)  # says what is wrong, and where
                if type(event) in _SEALED_TYPES:
                    event = self._opened(event, row[_EVENT_ID])
                yield Recorded(*row[:PLACED], event)

    def rows(self, after: int = 0, *, types: Iterable[str | type] | None = None, until: int | None = None,
             bodies: Iterable[str] | None = None) -> Iterator[list[tuple]]:
        """Pages of rows of READ_COLUMNS, for folds that decode only what they need (`Decoders`);
        `data` is None in rows whose type is not in `bodies` (None: every row has its body)."""
        return self.recorder.pages(READ_COLUMNS, after, types=_names(types), until=until, bodies=_names(bodies))

    def read_stream(self, stream: str) -> Iterator[Recorded]:
        return map(self.typed, self.recorder.read_stream(stream))

    def get(self, event_id: str) -> Recorded | None:
        row = self.recorder.get(event_id)
        return self.typed(row) if row else None

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


SERVER_SCHEMES = ("postgresql://", "postgres://")


def is_server(db) -> bool:
    """Whether `db` names a log on a PostgreSQL server (a URL) rather than a SQLite file."""
    return isinstance(db, str) and db.startswith(SERVER_SCHEMES)


def open_store(path: str | os.PathLike, *, create: bool = False, synchronous: str = "FULL") -> EventStore:
    """The log at `path`: a SQLite file, or a PostgreSQL database given as a postgresql:// URL
    (eventstore/postgres.py; `synchronous` is SQLite's and does not apply there)."""
    if is_server(path):
        try:
            from selfheal.eventstore.postgres import PostgresRecorder  # psycopg is an optional extra
        except ModuleNotFoundError as exc:
            raise StoreError(f"{exc.name} is not installed: a postgresql:// log needs it "
                             "(pip install 'vllm-selfheal[postgres]')") from None
        return EventStore(PostgresRecorder(path, create=create))
    return EventStore(SQLiteRecorder(path, create=create, synchronous=synchronous))


def memory_store(clock=None) -> EventStore:
    return EventStore(InMemoryRecorder(clock=clock) if clock else InMemoryRecorder())
