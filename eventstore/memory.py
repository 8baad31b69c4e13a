"""A recorder in process memory: scratch stores for replay, and fast unit tests.

It passes the same contract suite as SQLite, so code tested against it behaves the same on
the real log. It keeps nothing across processes and is not durable by design.
"""
from __future__ import annotations

import bisect
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime

import msgspec

from selfheal.eventstore.errors import CheckpointConflict, ConcurrencyError, DuplicateEventConflict
from selfheal.eventstore.hashing import GENESIS, HASH, POSITION, chain_rows, verify_rows
from selfheal.eventstore.recorder import (
    AppendRequest, Break, CheckpointAdvance, EventFilter, NewEvent, Recorder, StoredEvent, VerifyReport,
    system_clock, utc_iso,
)


class InMemoryRecorder(Recorder):
    def __init__(self, *, clock: Callable[[], datetime] = system_clock):
        self._clock = clock
        self._rows: list[StoredEvent] = []
        self._by_id: dict[str, int] = {}
        self._streams: dict[str, list[int]] = {}
        self._checkpoints: dict[str, int] = {}
        self._keys: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def append(self, stream: str, events: Sequence[NewEvent], expected_version: int | None = None) -> list[int]:
        return self.append_many([AppendRequest(stream, events, expected_version)])[0]

    def _plan(self, request: AppendRequest, head: list, pending: list[StoredEvent]) -> list[int]:
        events = request.events
        if not events:
            return []
        planned_ids = {row.event_id: row.position for row in pending}
        stored = {e.event_id: self._by_id.get(e.event_id, planned_ids.get(e.event_id))
                  for e in events}
        stored = {k: v for k, v in stored.items() if v is not None}
        if stored:
            if len(stored) == len(events):
                return [stored[e.event_id] for e in events]
            raise DuplicateEventConflict(
                f"stream {request.stream!r}: {len(stored)} of {len(events)} event ids in the batch "
                f"are stored already (e.g. {next(iter(stored))}); a retry must resend the same batch")
        if len({e.event_id for e in events}) != len(events):
            raise DuplicateEventConflict(f"stream {request.stream!r}: the batch repeats an event id")
        version = len(self._streams.get(request.stream, ())) + sum(1 for r in pending if r.stream == request.stream)
        if request.expected_version is not None and request.expected_version != version:
            raise ConcurrencyError(request.stream, request.expected_version, version)
        rows = chain_rows(events, request.stream, position=head[0], version=version, previous=head[1],
                          recorded_at=utc_iso(self._clock()))
        pending.extend(StoredEvent(*row) for row in rows)
        head[0], head[1] = rows[-1][POSITION], rows[-1][HASH]
        return [r[POSITION] for r in rows]

    def append_many(self, requests: Sequence[AppendRequest],
                    checkpoints: Sequence[CheckpointAdvance] = ()) -> list[list[int]]:
        with self._lock:
            for move in checkpoints:
                current = self._checkpoints.get(move.handler, 0)
                if current != move.expected:
                    raise CheckpointConflict(move.handler, move.expected, current)
            last = self._rows[-1] if self._rows else None
            head = [last.position, last.hash] if last else [0, GENESIS]
            pending: list[StoredEvent] = []
            # plan everything first so that an error leaves nothing half-applied
            positions = [self._plan(r, head, pending) for r in requests]
            for row in pending:
                self._rows.append(row)
                self._by_id[row.event_id] = row.position
                self._streams.setdefault(row.stream, []).append(row.position)
            planned = {row.event_id for row in pending}
            for request in requests:
                for event in request.events:
                    if event.key is not None and event.event_id in planned:
                        self._keys.setdefault(f"event:{event.event_id}", event.key)
            for move in checkpoints:
                self._checkpoints[move.handler] = move.position
            return positions

    def read(self, after: int = 0, *, types: Iterable[str] | None = None, until: int | None = None,
             page: int = 1000) -> Iterator[StoredEvent]:
        wanted = set(types) if types is not None else None
        stop = len(self._rows) if until is None else min(until, len(self._rows))
        for row in self._rows[max(after, 0):stop]:
            if wanted is None or row.type in wanted:
                yield row

    def query(self, where: EventFilter, limit: int | None = None) -> Iterator[StoredEvent]:
        found = 0
        for row in self.read(where.after, until=where.until):
            if where.matches(row):
                if limit is not None and found >= limit:
                    return
                found += 1
                yield row

    def read_stream(self, stream: str, after_version: int = 0) -> Iterator[StoredEvent]:
        for position in self._streams.get(stream, ())[after_version:]:
            yield self._rows[position - 1]

    def get(self, event_id: str) -> StoredEvent | None:
        position = self._by_id.get(event_id)
        return self._rows[position - 1] if position else None

    def last_position(self) -> int:
        return len(self._rows)

    def stream_version(self, stream: str) -> int:
        return len(self._streams.get(stream, ()))

    def checkpoint(self, handler: str) -> int:
        return self._checkpoints.get(handler, 0)

    def checkpoints(self) -> dict[str, int]:
        return dict(sorted(self._checkpoints.items()))

    def position_at(self, moment: str) -> int:
        recorded = bisect.bisect_right([r.recorded_at for r in self._rows], moment)
        occurred = max((r.position for r in self._rows if r.occurred_at <= moment), default=0)
        return max(recorded, occurred)

    def verify(self) -> VerifyReport:
        count, head, head_hash, broken = verify_rows(msgspec.structs.astuple(r) for r in self._rows)
        return VerifyReport(ok=broken is None, events=count, head_position=head, head_hash=head_hash,
                            first_break=Break(*broken) if broken else None)


    def event_key(self, event_id: str) -> bytes | None:
        return self._keys.get(f"event:{event_id}")

    def forget(self, event_id: str, record: AppendRequest) -> list[int]:
        with self._lock:
            key = self._keys.pop(f"event:{event_id}", None)
        try:
            return self.append_many([record])[0]
        except BaseException:
            if key is not None:  # nothing recorded: nothing forgotten either
                self._keys[f"event:{event_id}"] = key
            raise

    def secret(self, name: str) -> bytes:
        with self._lock:
            return self._keys.setdefault(f"secret:{name}", os.urandom(32))
