"""One event, in one round trip: an observation, an approval, a runner's commit (the event, its
lease's fence and its checkpoint moves, postgres_schema._checks).

Why it is its own path (bench/postgres.py measures it beside a plain psycopg insert loop):
- The append function (postgres_schema.APPEND) is PL/pgSQL, whose own cost per call was most
  of an append's server time; one event goes as one prepared INSERT instead
  (postgres_schema.one_event / next_event), and only what that inserts nothing for goes to the
  function, which tells the cases apart (a conflict, a retry, an empty log).
- Looking the head and the stream's version up is two index probes, and hashing the row with
  SQL's to_json and concat is as many expression nodes as the rest of the statement: together
  about half of the server's time. A recorder appending alone needs neither: the head is the row
  its own last append wrote, and a stream's version the one it wrote last. So it keeps them
  (`tail`, `versions`) and sends NEXT_EVENT, which looks nothing up and hashes the text msgspec
  made around recorded_at. It returns recorded_at alone, and the client hashes the same text
  (hashlib, well under a microsecond) for the next append's previous hash: cheaper than the
  server sending the hash, its position and version back, and `verify` would find a difference.
  Kept values are trusted only while nobody else appends: a position that does not follow the
  kept one shows another writer, which drops every kept version, and the recorder then looks the
  head up (ONE_EVENT) until two of its rows follow each other again (`alone`), so that where
  several writers take turns an append is one statement, not a stale NEXT_EVENT and then
  ONE_EVENT; a kept head that went stale shows as its position taken (nothing inserted: ON
  CONFLICT, so no error lands in the server's log) and the same append goes the ONE_EVENT way.
  Every other write of this recorder (the function, copy_into) drops them too. Were a kept
  version stale all the same, the unique (stream, version) index refuses the row and the
  function decides.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

import msgspec
from psycopg import errors as pg_errors

from selfheal.eventstore import postgres_schema as schema
from selfheal.eventstore.recorder import CheckpointAdvance, NewEvent, utc_iso

_encode = msgspec.json.Encoder().encode
_sha256 = hashlib.sha256
#: streams whose version is kept, at most: a log has many streams, a writer appends to a few at once
KEPT_VERSIONS = 4096


class SingleAppends:
    def __init__(self):
        #: (position, recorded_at, hash) of the row this recorder wrote last; None: not known
        self.tail: tuple[int, str, str] | None = None
        #: stream -> its version, for streams this recorder wrote to since another writer last did
        self.versions: dict[str, int] = {}
        #: the row written last followed the one written before it: nobody else appended in
        #: between, so the next append continues from the kept head (NEXT_EVENT); where others
        #: append too, it looks the head up at once (ONE_EVENT) rather than find it moved first
        self.alone = False

    def forget(self) -> None:
        self.tail, self.alone = None, False
        self.versions.clear()

    def append(self, recorder, stream: str, e: NewEvent, expected: int | None,
               moves: Sequence[CheckpointAdvance] = ()) -> int | None:
        """The event's position, or None where the append function must decide (nothing
        inserted: a version conflict, a stored id, an empty log, a head that moved, a lost
        lease, a checkpoint conflict). With the recorder's fence or checkpoint moves it is a
        runner's commit (postgres_schema._checks)."""
        tail, version = self.tail, self.versions.get(stream)
        try:
            if self.alone and version is not None and expected in (None, version):
                position, last, previous = tail
                # the hashed text (eventstore/hashing.py) around recorded_at, which the server adds
                before = _encode((previous, position + 1, e.event_id, stream, version + 1, e.type, e.schema_version,
                                  e.occurred_at))[:-1] + b","
                after = b"," + _encode((e.correlation_id, e.causation_id, e.data))[1:]
                values = (position + 1, e.event_id, stream, version + 1, e.type, e.schema_version, e.occurred_at,
                          e.correlation_id, e.causation_id, e.data, before.decode(), after.decode(), last)
                if recorder.fence or moves or e.key is not None or recorder._clock is not None:
                    sql, params = self._extras(recorder, e, moves, "next", dict(zip(schema.NEXT_ORDER, values)))
                    row = recorder._appends.execute(sql, params).fetchone()
                else:  # an observation: its parameters in NEXT_PLAIN's order, no dict to build and reorder
                    row = recorder._appends.execute(schema.NEXT_PLAIN, values).fetchone()
                if row is not None:
                    # the server hashed this very text around the recorded_at it returns
                    self.tail = (position + 1, row[0], _sha256(before + _encode(row[0]) + after).hexdigest())
                    self.versions[stream] = version + 1
                    return position + 1
                # another writer appended (its row takes this position: the one looked up does not
                # follow the kept head, so _keep finds this recorder not alone) or a check failed
            params = {"id": e.event_id, "stream": stream, "type": e.type, "sv": e.schema_version,
                      "occ": e.occurred_at, "corr": e.correlation_id, "caus": e.causation_id, "data": e.data}
            if expected is not None:
                params["expected"] = expected
            sql, params = self._extras(recorder, e, moves, "one", params, expected is not None)
            row = recorder._appends.execute(sql, params).fetchone()
        except pg_errors.UniqueViolation:
            row = None  # a stored id: the function returns its positions or names the conflict
        if row is None:
            self.forget()
            return None
        return self._keep(row, stream, tail)

    @staticmethod
    def _extras(recorder, e: NewEvent, moves, which: str, params: dict, expected: bool = False) -> tuple[str, dict]:
        """The statement for what the append carries besides its row, and its parameters."""
        clock, keyed, leases = recorder._clock is not None, e.key is not None, len(recorder.fence)
        if clock:
            params["clock"] = utc_iso(recorder._clock())
        if keyed:
            params["key"] = e.key
        for i, (lease, token) in enumerate(recorder.fence.items()):
            params[f"lease{i}"], params[f"token{i}"] = lease, token
        for i, move in enumerate(moves):
            params[f"handler{i}"], params[f"from{i}"], params[f"to{i}"] = move.handler, move.expected, move.position
        if which == "next":
            return schema.next_event(clock, keyed, leases, len(moves)), params
        return schema.one_event(expected, clock, keyed, leases, len(moves)), params

    def _keep(self, row: tuple, stream: str, tail: tuple | None) -> int:
        position, version, recorded_at, chain = row
        self.alone = tail is not None and position == tail[0] + 1
        if not self.alone or len(self.versions) >= KEPT_VERSIONS:
            self.versions.clear()  # another writer may have appended to any stream meanwhile
        self.tail, self.versions[stream] = (position, recorded_at, chain), version
        return position
