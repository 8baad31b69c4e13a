"""The recorder interface: what any backend of the log must do.

A recorder stores rows that are already encoded (the body is JSON text); typing, upcasting
and ids live one layer up, in `eventstore.store`. Every backend must pass the contract
suite in `tests/eventstore/contract.py`, so a server-backed recorder (PostgreSQL for a
fleet) can replace SQLite without touching handlers or projections.
"""
from __future__ import annotations

import abc
import functools
import operator
import typing
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timezone

import msgspec


@functools.lru_cache(maxsize=256)
def utc_iso(moment: datetime) -> str:
    """The one timestamp format of the log: ISO-8601, UTC, microseconds, 'Z'.

    A fixed width makes text order equal time order, so SQL range filters work on it.
    """
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment!r}: the log stores aware UTC times only")
    if moment.tzinfo is not timezone.utc:
        moment = moment.astimezone(timezone.utc)
    return moment.isoformat(timespec="microseconds")[:-6] + "Z"  # "+00:00" -> "Z"


def parse_utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


def system_clock() -> datetime:
    return datetime.now(timezone.utc)


class NewEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One row to append; `data` is the body as JSON text."""

    event_id: str
    type: str
    schema_version: int
    occurred_at: str
    data: str
    correlation_id: str | None = None
    causation_id: str | None = None
    #: the key of the event's sealed fields (eventstore/sealing.py), kept beside the log and
    #: written in the event's transaction; never part of the row or its hash
    key: bytes | None = None


class StoredEvent(msgspec.Struct, frozen=True):
    """One row as stored: the columns of the `events` table, in column order.

    This is the one list of those columns: every SQL column list, every row index and the
    hashed form of a row derive from it (`COLUMNS`, `REQUIRED`). The table a log was created
    with is the stored format and is written out in eventstore/sqlite.py (`FORMAT_1_COLUMNS`);
    tests/eventstore/test_columns.py holds the two equal, so editing this Struct cannot quietly
    change what an existing log is or how its rows hash."""

    position: int
    event_id: str
    stream: str
    version: int
    type: str
    schema_version: int
    occurred_at: str
    recorded_at: str
    correlation_id: str | None
    causation_id: str | None
    data: str
    hash: str


#: the columns of the `events` table, in order
COLUMNS: tuple[str, ...] = StoredEvent.__struct_fields__
def check_columns(columns) -> None:
    """Refuse a read's column list that no recorder can page: unknown names, or no position."""
    if "position" not in columns:
        raise ValueError(f"{', '.join(columns)}: a read pages by position, so the columns must include it")
    for column in columns:
        if column not in COLUMNS:
            raise ValueError(f"{column!r} is not a column of the log (columns: {', '.join(COLUMNS)})")


#: the columns no row may leave empty (NOT NULL in the table)
REQUIRED: tuple[str, ...] = tuple(
    f.name for f in msgspec.structs.fields(StoredEvent) if type(None) not in typing.get_args(f.type)
)


class AppendRequest(msgspec.Struct, frozen=True):
    """Events for one stream; expected_version None means 'whatever the stream is at'."""

    stream: str
    events: Sequence[NewEvent]
    expected_version: int | None = None


class CheckpointAdvance(msgspec.Struct, frozen=True):
    """Move a handler's checkpoint from `expected` to `position` in the same transaction."""

    handler: str
    expected: int
    position: int


class EventFilter(msgspec.Struct, frozen=True, kw_only=True):
    """Audit filters; every field narrows the result, None means no constraint."""

    after: int = 0
    until: int | None = None
    types: tuple[str, ...] | None = None
    stream: str | None = None
    correlation_id: str | None = None
    occurred_since: str | None = None
    occurred_until: str | None = None

    def matches(self, row: "StoredEvent") -> bool:
        return (
            row.position > self.after
            and (self.until is None or row.position <= self.until)
            and (self.types is None or row.type in self.types)
            and (self.stream is None or row.stream == self.stream)
            and (self.correlation_id is None or row.correlation_id == self.correlation_id)
            and (self.occurred_since is None or row.occurred_at >= self.occurred_since)
            and (self.occurred_until is None or row.occurred_at < self.occurred_until)
        )


class Break(msgspec.Struct, frozen=True):
    position: int | None
    problem: str


class VerifyReport(msgspec.Struct, frozen=True):
    ok: bool
    events: int
    head_position: int
    head_hash: str
    first_break: Break | None = None


class Recorder(abc.ABC):
    """Append-only storage of event rows with a global order and per-stream versions."""

    @abc.abstractmethod
    def append(self, stream: str, events: Sequence[NewEvent], expected_version: int | None = None) -> list[int]:
        """Append atomically; returns the positions.

        A stale expected_version raises ConcurrencyError. A batch whose event ids are all
        stored already returns the stored positions and writes nothing (a retry); a batch
        mixing stored and new ids raises DuplicateEventConflict.
        """

    @abc.abstractmethod
    def append_many(
        self, requests: Sequence[AppendRequest], checkpoints: Sequence[CheckpointAdvance] = ()
    ) -> list[list[int]]:
        """Several appends, and any number of checkpoint moves, in one transaction.

        Every move is a compare-and-set: if one handler's checkpoint is not where the move
        expects it, CheckpointConflict names that handler and nothing is written."""

    @abc.abstractmethod
    def read(
        self,
        after: int = 0,
        *,
        types: Iterable[str] | None = None,
        until: int | None = None,
        page: int = 1000,
    ) -> Iterator[StoredEvent]:
        """Rows with position > after (and <= until), in order, fetched page by page."""

    def pages(
        self,
        columns: Sequence[str],
        after: int = 0,
        *,
        types: Iterable[str] | None = None,
        until: int | None = None,
        bodies: Iterable[str] | None = None,
        page: int = 1000,
    ) -> Iterator[list[tuple]]:
        """What `read` reads, as tuples of `columns` (names from COLUMNS, position among them),
        a page (list) at a time.

        `data` is None in the rows whose type is not in `bodies` (None: every row carries its
        body), so a fold that needs only the envelope of most rows neither fetches nor copies
        their bodies. The lists are the caller's: no Struct per row, no generator per row.
        This generic version serves any backend; a database backend selects the columns itself.
        """
        get = operator.attrgetter(*columns) if len(columns) > 1 else (lambda row: (getattr(row, columns[0]),))
        data = columns.index("data") if "data" in columns else None
        keep = None if bodies is None or data is None else frozenset(bodies)
        batch: list[tuple] = []
        for row in self.read(after, types=types, until=until, page=page):
            values = get(row)
            if keep is not None and row.type not in keep:
                values = (*values[:data], None, *values[data + 1:])
            batch.append(values)
            if len(batch) == page:
                yield batch
                batch = []
        if batch:
            yield batch

    @abc.abstractmethod
    def query(self, where: EventFilter, limit: int | None = None) -> Iterator[StoredEvent]:
        """Rows matching every filter, in position order, streamed."""

    @abc.abstractmethod
    def read_stream(self, stream: str, after_version: int = 0) -> Iterator[StoredEvent]:
        ...

    @abc.abstractmethod
    def get(self, event_id: str) -> StoredEvent | None:
        ...

    @abc.abstractmethod
    def last_position(self) -> int:
        ...

    @abc.abstractmethod
    def stream_version(self, stream: str) -> int:
        """0 for a stream with no events."""

    @abc.abstractmethod
    def checkpoint(self, handler: str) -> int:
        """The last position `handler` has handled; 0 when it has handled none."""

    @abc.abstractmethod
    def checkpoints(self) -> dict[str, int]:
        ...

    @abc.abstractmethod
    def position_at(self, moment: str) -> int:
        """The last position recorded, or whose event occurred, at or before `moment` (ISO UTC);
        0 if none. An event occurs before it is recorded (a reactor's decision carries its cause's
        time, an activity's result the time the effect ended), and what people read and copy is
        the time it occurred: `--as-of` that time stands right after the event it shows."""

    @abc.abstractmethod
    def verify(self) -> VerifyReport:
        """Walk the hash chain; report the first position where it breaks."""

    # -- keys kept beside the log, outside the hash chain (eventstore/sealing.py) --------------

    @abc.abstractmethod
    def event_key(self, event_id: str) -> bytes | None:
        """The key an event's sealed fields were sealed with; None if it has none or it was destroyed."""

    @abc.abstractmethod
    def forget(self, event_id: str, record: AppendRequest) -> list[int]:
        """Destroy `event_id`'s key and append `record` (what was forgotten, and why) in one
        transaction, so that a key is never gone without the log saying so. Returns the
        record's positions. The key's bytes are overwritten where the backend allows it."""

    @abc.abstractmethod
    def secret(self, name: str) -> bytes:
        """A random 32-byte key of this log, made on first use and kept beside the log (the
        redaction fingerprint key): the same log always answers the same key."""

    # -- a cache beside the log (projections/snapshots.py); a backend without one keeps none -----

    #: whether this backend stores view snapshots (an in-process log has no use for them)
    keeps_snapshots: bool = False

    def hash_at(self, position: int) -> str | None:
        """The chain hash of the row at `position`; None where there is none."""
        return next((row.hash for row in self.read(position - 1, until=position)), None)

    def stored_secret(self, name: str) -> bytes | None:
        """`secret(name)` if the log has it, read without making it (a read never writes)."""
        return None

    def snapshot(self, key: str) -> tuple[int, str, bytes] | None:
        """(position, chain hash, data) of the snapshot stored under `key`, as stored."""
        return None

    def save_snapshot(self, key: str, position: int, chain: str, data: bytes) -> None:
        """Store the snapshot under `key` and drop those under any other key, in one
        transaction; a failure is a StoreError (the caller skips the cache write)."""
        raise NotImplementedError

    def close(self) -> None:  # noqa: B027 - optional for backends without resources
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
