"""One event, in one round trip: an observation, an approval, a runner's commit (the event, its
lease's fence and its checkpoint moves, postgres_schema._checks).

Why it is its own path (bench/postgres.py measures it beside a plain psycopg insert loop):
- The append function (postgres_schema.APPEND) is PL/pgSQL, whose own cost per call was most
  of an append's server time; one event goes as one prepared INSERT instead
  (postgres_schema.one_event / next_event), and only what that inserts nothing for goes to the
  function, which tells the cases apart (a conflict, a retry, an empty log).
- The statements go through libpq's prepared execution, not a psycopg cursor (`Prepared`), whose
  own Python cost per execute was as much as the server's work of an append.
- Looking the head and the stream's version up is two index probes, and hashing the row with
  SQL's to_json and concat is as many expression nodes as the rest of the statement. A recorder
  appending alone needs neither: the head is the row its own last append wrote, and a stream's
  version the one it wrote last. So it keeps them (`head`, `versions`) and sends NEXT_EVENT,
  which reads the row before by its position for the previous hash and recorded_at, and hashes
  the text msgspec made around them; nothing comes back but the count of rows written.
  Kept values are trusted only while nobody else appends: a position that does not follow the
  kept one shows another writer, which drops every kept version, and the recorder then looks the
  head up (ONE_EVENT, after the append lock in the same pipeline) until two of its rows follow
  each other again (`streak`), so that where several writers take turns an append is one round
  trip, not a stale NEXT_EVENT and then ONE_EVENT. A kept head that went stale shows as its
  position taken: nothing inserted (ON CONFLICT, no error in the server's log) or, after
  FAST_AFTER appends alone in a row, a unique violation on the primary key (NEXT_FAST, one ERROR
  line); either way the same append goes the ONE_EVENT way. After ALONE_FOR_S without an append
  the head is looked up too. Every other write of this recorder (the function, copy_into) drops
  what it keeps. Were a kept version stale all the same, the unique (stream, version) index
  refuses the row and the function decides.
"""
from __future__ import annotations

import itertools
import re
import struct
import time
from collections.abc import Sequence

import msgspec
import psycopg
from psycopg import errors as pg_errors
from psycopg import generators, pq

from selfheal.eventstore import postgres_schema as schema
from selfheal.eventstore.recorder import CheckpointAdvance, NewEvent, utc_iso

_encode = msgspec.json.Encoder().encode
#: streams whose version is kept, at most: a log has many streams, a writer appends to a few at once
KEPT_VERSIONS = 4096
#: seconds after its last append that a recorder still takes itself to be appending alone: after a
#: quiet spell another node may well have appended, and looking the head up costs nothing then
ALONE_FOR_S = 1.0
#: appends in a row, each following the one before, after which the kept head is sent without ON
#: CONFLICT (NEXT_FAST): by then another writer showing up is rare, and its one ERROR line in the
#: server's log is worth the 3 us a speculative insertion costs each append; where writers take
#: turns a recorder's rows seldom follow each other that long, and NEXT_PLAIN finds them quietly
FAST_AFTER = 16
_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%s")
#: parameter and column types by oid: int8, int4, text, bytea (the only ones these statements use)
_INT8, _INT4, _TEXT, _BYTEA = 20, 23, 25, 17
_PACK8, _PACK4 = struct.Struct(">q").pack, struct.Struct(">i").pack
#: NEXT_PLAIN's parameter types, in NEXT_ORDER
_NEXT_TYPES = (_INT8, _TEXT, _TEXT, _INT4, _TEXT, _INT4, _TEXT, _TEXT, _TEXT, _TEXT, _TEXT, _TEXT)
_FATAL, _TUPLES, _COMMAND = pq.ExecStatus.FATAL_ERROR, pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK
_ABORTED = pq.ExecStatus.PIPELINE_ABORTED
#: libpq 14 or later: the lock and ONE_EVENT go in one pipeline (Prepared.run_after_lock)
_PIPELINES = psycopg.Pipeline.is_supported()
#: prepared statements' numbers, unique in the process (never two alike on one connection)
_NAMES = itertools.count(1)


class Prepared:
    """The recorder's single-append statements, each prepared once on its connection and run
    through libpq's prepared execution (psycopg's pgconn), not a cursor.

    Why: a cursor's execute costs about 10 us of Python per call on top of libpq's (its query
    cache, dumper lookups, the prepare manager, a result set up for fetching), as much as the
    server's work of an append that continues from a kept head (bench/postgres.py's plain loop
    pays it as psycopg users do; its `plain_libpq` row shows the same loop through this path).
    Here each statement's parameter and column types are asked of the server once, when it is
    prepared, and every parameter goes in binary form: integers as PostgreSQL's big-endian
    words, text as its bytes (a NUL is refused by the server, never cut off as a C string), a
    key as raw bytes. The wait is psycopg's own (conn.wait: Ctrl-C cancels the statement), under
    the connection's lock, and a refusal is the exception psycopg would raise for it.
    `run` takes the statement in psycopg's form (%s or %(name)s placeholders: a name used twice
    is one parameter) and its parameters as a tuple (one per distinct placeholder, in order) or
    a dict; it returns the row (or None) with its integers and text decoded; `run_encoded` takes
    them encoded already (the common append builds its list in one go)."""

    def __init__(self, conn):
        self.conn, self.pgconn = conn, conn.pgconn
        self.encoding = conn.info.encoding
        #: text parameters go as UTF-8 (msgspec's bytes as they are): `run_encoded` may be used
        self.utf8 = self.encoding == "utf-8"
        #: sql -> (statement name, parameter names or None, parameter types, encoders, decoders, formats)
        self.statements: dict[str, tuple] = {}

    def _wait(self):
        # psycopg's own wait: Ctrl-C cancels the statement on the server, as with a cursor
        return self.conn.wait(generators.execute(self.pgconn))[-1]

    def _prepare(self, sql: str) -> tuple:
        names: list[str] = []

        def number(match) -> str:
            name = match.group(1) or str(len(names))
            if name not in names:
                names.append(name)
            return f"${names.index(name) + 1}"
        text = _PLACEHOLDER.sub(number, sql)
        assert "%" not in text, "a placeholder the single-append path cannot number"
        statement = f"selfheal_single_{next(_NAMES)}".encode()
        with self.conn.lock:
            self.pgconn.send_prepare(statement, text.encode())
            res = self._wait()
            if res.status == _COMMAND:
                self.pgconn.send_describe_prepared(statement)
                res = self._wait()
        if res.status == _FATAL:
            raise pg_errors.error_from_result(res, encoding=self.encoding)
        types = tuple(res.param_type(i) for i in range(res.nparams))
        decoders = tuple(int if res.ftype(i) in (_INT8, _INT4) else self._decode for i in range(res.nfields))
        prepared = (statement, None if all(n.isdigit() for n in names) else tuple(names), types,
                    tuple(map(self._encoder, types)), decoders, [1] * len(types))  # a list: psycopg 3.1 takes no tuple
        self.statements[sql] = prepared
        return prepared

    def _encoder(self, oid: int):
        if oid == _INT8:
            return _PACK8
        if oid == _INT4:
            return _PACK4
        if oid == _BYTEA:
            return bytes
        assert oid == _TEXT, f"a parameter of type oid {oid} on the single-append path"
        if self.utf8:  # bytes given for text are msgspec's, UTF-8 already
            return lambda v: v if type(v) is bytes else v.encode()
        return lambda v: (v.decode() if type(v) is bytes else v).encode(self.encoding)

    def _decode(self, value: bytes) -> str:
        return value.decode(self.encoding)

    def _encoded(self, prepared: tuple, params) -> list:
        encoders = prepared[3]
        values = [params[n] for n in prepared[1]] if type(params) is dict else params
        if len(values) != len(encoders):
            raise TypeError(f"{len(values)} parameters for a statement that takes {len(encoders)}")
        return [None if v is None else encode(v) for encode, v in zip(encoders, values)]

    def run(self, sql: str, params) -> tuple | None:
        prepared = self.statements.get(sql) or self._prepare(sql)
        return self._send(sql, prepared, self._encoded(prepared, params))

    def run_encoded(self, sql: str, sent: list, types: tuple[int, ...]) -> tuple | None:
        """`sql` with parameters encoded as `run` would encode them for `types` (checked against
        the types the server gave the statement: a mismatch is a bug here, never a wrong row)."""
        prepared = self.statements.get(sql) or self._prepare(sql)
        if prepared[2] != types:
            raise TypeError(f"parameters encoded for types {types}, the statement takes {prepared[2]}")
        return self._send(sql, prepared, sent)

    def _send(self, sql: str, prepared: tuple, sent: list, again: bool = True) -> tuple | None:
        try:
            with self.conn.lock:
                self.pgconn.send_query_prepared(prepared[0], sent, param_formats=prepared[5])
                return self._row(prepared, self.conn.wait(generators.execute(self.pgconn))[-1])
        except pg_errors.InvalidSqlStatementName:
            if not again:
                raise
            # the session's prepared statements were dropped (DISCARD ALL, a pooler's new server
            # connection): prepare it again, once
            self.statements.clear()
            return self._send(sql, self._prepare(sql), sent, again=False)

    def _row(self, prepared: tuple, res) -> tuple | None:
        """The statement's row, () for a row written and not returned, None for none, or its error."""
        if res.status == _COMMAND:  # no RETURNING: whether a row was written
            return () if res.command_tuples else None
        if res.status == _TUPLES:
            if not res.ntuples:
                return None
            return tuple(None if (v := res.get_value(0, i)) is None else decode(v)
                         for i, decode in enumerate(prepared[4]))
        if res.status == _FATAL:
            raise pg_errors.error_from_result(res, encoding=self.encoding)
        raise pg_errors.InternalError(f"unexpected result status {res.status} of a single append")

    def run_after_lock(self, sql: str, params) -> tuple | None:
        """`sql` after schema.LOCK_STATEMENT, in one transaction and one round trip (a libpq
        pipeline: two statements before one Sync make one implicit transaction, each with its own
        snapshot). Where another append holds the lock, `sql` waits in the first statement and
        then reads the head that append wrote; on its own, a statement's snapshot is taken
        before it waits, so it reads a head already gone, inserts nothing, and the append goes
        round again through the append function (nearly every time where writers take turns)."""
        if not _PIPELINES:
            return self.run(sql, params)
        prepared = self.statements.get(sql) or self._prepare(sql)
        sent = self._encoded(prepared, params)
        for attempt in (0, 1):
            lock = self.statements.get(schema.LOCK_STATEMENT) or self._prepare(schema.LOCK_STATEMENT)
            prepared = self.statements.get(sql) or self._prepare(sql)
            pg = self.pgconn
            with self.conn.lock:
                pg.enter_pipeline_mode()
                try:
                    pg.send_query_prepared(lock[0], [], param_formats=[])
                    pg.send_query_prepared(prepared[0], sent, param_formats=prepared[5])
                    pg.pipeline_sync()
                    self.conn.wait(generators.send(pg))
                    locked, inserted, synced = (self.conn.wait(generators.fetch_many(pg)) for _ in range(3))
                    pg.exit_pipeline_mode()
                except BaseException:
                    # a pipeline left half read (Ctrl-C, a lost server) cannot be used again, nor
                    # can the connection: close it rather than leave psycopg a libpq in pipeline mode
                    pg.finish()
                    raise
            try:
                self._row(lock, locked[-1])
                if inserted[-1].status == _ABORTED:
                    raise pg_errors.InternalError("the append lock's statement failed in its pipeline")
                return self._row(prepared, inserted[-1])
            except pg_errors.InvalidSqlStatementName:
                if attempt:
                    raise
                self.statements.clear()  # dropped (DISCARD ALL, a pooler): prepare both again, once
        raise AssertionError("unreachable")


class SingleAppends:
    def __init__(self):
        #: the position of the row this recorder wrote last; None: not known
        self.head: int | None = None
        #: stream -> its version, for streams this recorder wrote to since another writer last did
        self.versions: dict[str, int] = {}
        #: this recorder's last appends in a row whose rows followed each other: from one on, nobody
        #: else appended in between, so the next append continues from the kept head (NEXT_EVENT,
        #: without ON CONFLICT from FAST_AFTER on); at 0, others append too, and it looks the head up
        #: at once (ONE_EVENT) rather than find it moved first
        self.streak = 0
        #: time.monotonic() of this recorder's last single append (ALONE_FOR_S)
        self.at = 0.0

    def forget(self) -> None:
        self.head, self.streak = None, 0
        self.versions.clear()

    def append(self, recorder, stream: str, e: NewEvent, expected: int | None,
               moves: Sequence[CheckpointAdvance] = ()) -> int | None:
        """The event's position, or None where the append function must decide (nothing
        inserted: a version conflict, a stored id, an empty log, a lost lease, a checkpoint
        conflict). With the recorder's fence or checkpoint moves it is a runner's commit
        (postgres_schema._checks)."""
        head, version, now = self.head, self.versions.get(stream), time.monotonic()
        prepared = recorder._appends
        try:
            if self.streak and version is not None and expected in (None, version) and now - self.at < ALONE_FOR_S:
                # the hashed text (eventstore/hashing.py) after the previous hash, up to recorded_at, and
                # after it: the server puts the previous row's hash and the recorded_at it takes around them
                before = b'",' + _encode((head + 1, e.event_id, stream, version + 1, e.type, e.schema_version,
                                          e.occurred_at))[1:-1] + b","
                after = b"," + _encode((e.correlation_id, e.causation_id, e.data))[1:]
                try:
                    extras = recorder.fence or moves or e.key is not None or recorder._clock is not None
                    if not extras and prepared.utf8:  # an observation: its parameters encoded in one go
                        corr, caus = e.correlation_id, e.causation_id
                        row = prepared.run_encoded(schema.NEXT_FAST if self.streak >= FAST_AFTER else schema.NEXT_PLAIN, [
                            _PACK8(head + 1), e.event_id.encode(), stream.encode(), _PACK4(version + 1),
                            e.type.encode(), _PACK4(e.schema_version), e.occurred_at.encode(),
                            None if corr is None else corr.encode(), None if caus is None else caus.encode(),
                            e.data.encode(), before, after], _NEXT_TYPES)
                    else:
                        params = dict(zip(schema.NEXT_ORDER, (
                            head + 1, e.event_id, stream, version + 1, e.type, e.schema_version, e.occurred_at,
                            e.correlation_id, e.causation_id, e.data, before, after)))
                        row = prepared.run(*self._extras(recorder, e, moves, "next", params))
                except pg_errors.UniqueViolation as exc:
                    if exc.diag.constraint_name != schema.POSITION_KEY:
                        raise
                    row = None  # NEXT_FAST: another writer took the position
                if row is not None:
                    self.head, self.versions[stream], self.streak, self.at = head + 1, version + 1, self.streak + 1, now
                    return head + 1
                # another writer took the position, a check failed, or the row before is gone (another
                # log in its place): look the head up
            params = {"id": e.event_id, "stream": stream, "type": e.type, "sv": e.schema_version,
                      "occ": e.occurred_at, "corr": e.correlation_id, "caus": e.causation_id, "data": e.data}
            if expected is not None:
                params["expected"] = expected
            row = prepared.run_after_lock(*self._extras(recorder, e, moves, "one", params, expected is not None))
        except pg_errors.UniqueViolation:
            row = None  # a stored id: the function returns its positions or names the conflict
        if row is None:
            self.forget()
            return None
        position, version = row
        # the row follows this recorder's last one: nobody else appended in between
        self.streak = self.streak + 1 if head is not None and position == head + 1 else 0
        if not self.streak or len(self.versions) >= KEPT_VERSIONS:
            self.versions.clear()  # another writer may have appended to any stream meanwhile
        self.head, self.versions[stream], self.at = position, version, now
        return position

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
