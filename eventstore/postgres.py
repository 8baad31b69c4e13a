"""The server recorder: one PostgreSQL database holds the log of a fleet of nodes.

Design notes (why, not what):
- An append is one round trip. Several events go as one call of the server-side function
  `selfheal_append_v2` (postgres_schema.py), which takes the append lock, reads the head,
  checks the fence, checkpoint moves, expected versions and stored ids, hashes the rows as
  eventstore/hashing.py does and inserts them, in one statement and so one implicit
  transaction: a conflict raises in it and nothing is written (v2 is a new name so that nodes
  on an older build keep calling theirs during an upgrade: same lock, same hashes). One event,
  with its fence and checkpoint moves where a runner commits, is one prepared INSERT with no
  PL/pgSQL call, whose own cost was most of an append's server time (postgres_single.py); what
  it does not insert goes to the function, which tells the cases apart.
- Appends are serialised by a transaction-level advisory lock taken before the chain head is
  read: every append needs the previous hash, and a sequence would leave gaps on rollback and
  let a tailing reader skip a row committed late. The lock is released at commit, after the
  rows are visible, so a reader never sees position n+1 without n. An advisory lock needs no
  privilege on the table (LOCK TABLE ... EXCLUSIVE needs UPDATE, DELETE or TRUNCATE, which
  the role selfheal runs as should not have) and, being transaction-scoped, survives a
  transaction-mode connection pooler. bench/postgres.py measures it against a table lock.
- `recorded_at` is the server's clock, read under that lock (never less than the head's), so
  positions and recorded times agree across nodes whose clocks differ, and `--as-of` holds.
- A runner's lease (handlers/runtime.py) fences its writes: while the recorder carries a
  fence, every write checks under the append lock that each lease still has the token the
  runner took; a runner whose lease passed to another node writes nothing more (LeaseLost).
"""
from __future__ import annotations

import json
import os
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence

import msgspec
import psycopg
from psycopg import errors as pg_errors

from selfheal.eventstore import postgres_schema as schema
from selfheal.eventstore.errors import (
    CannotOpen, CheckpointConflict, ConcurrencyError, DuplicateEventConflict, LogMissing, NewerFormat,
    NotASelfhealLog, StoreError,
)
from selfheal.eventstore.hashing import verify_rows
from selfheal.eventstore.postgres_single import Prepared, SingleAppends
from selfheal.eventstore.recorder import (
    COLUMNS, AppendRequest, Break, CheckpointAdvance, EventFilter, Recorder, StoredEvent, VerifyReport, check_columns,
    utc_iso,
)

SCHEMES = ("postgresql://", "postgres://")
#: the advisory lock's first key: 'SHL1', as SQLite's application_id; the second is the table's oid
_LOCK_CLASS = schema.LOCK_CLASS
_CALL = f"SELECT {schema.APPEND}(%s::jsonb, %s::jsonb, %s::jsonb, %s::text, %s::text)"
_encode = msgspec.json.Encoder().encode
_INSERT = f"INSERT INTO events ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))})"


def is_url(db) -> bool:
    return isinstance(db, str) and db.startswith(SCHEMES)


def shown(url: str) -> str:
    """The URL as errors show it: never its password."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


class LeaseLost(StoreError):
    """A runner's lease passed to another holder: nothing of this write was recorded."""


_CONFLICTS = (schema.VERSION_CONFLICT, schema.CHECKPOINT_CONFLICT, schema.LEASE_LOST, schema.DUPLICATE)


class PostgresRecorder(Recorder):
    keeps_snapshots = True
    #: what serialises appends, a statement of the append function (bench/postgres.py measures
    #: LOCK TABLE ... IN EXCLUSIVE MODE too)
    APPEND_LOCK = schema.ADVISORY_LOCK
    #: one event with no fence: one INSERT (postgres_schema.ONE_EVENT), not the function
    ONE_STATEMENT = True

    def __init__(self, url: str, *, create: bool = False, clock=None):
        self.url, self.where = url, shown(url)
        #: None: recorded_at is the server's clock (tests of replay inject one)
        self._clock = clock
        #: lease name -> token, checked by every write while set (handlers/runtime.py)
        self.fence: dict[str, int] = {}
        self.read_only: str | None = None
        #: the single append's kept head and versions (postgres_single.py)
        self._single = SingleAppends()
        try:
            self._conn = psycopg.connect(url, autocommit=True)
        except psycopg.Error as exc:
            raise CannotOpen(f"{self.where}: cannot connect ({' '.join(str(exc).split())})") from None
        # one cursor for the append function; one event goes through libpq (postgres_single.Prepared)
        self._calls = self._conn.cursor()
        self._appends = Prepared(self._conn)
        try:
            self._open(create)
        except BaseException:
            self._conn.close()
            raise

    # -- opening -------------------------------------------------------------------------

    def _format(self) -> int | None:
        """The log's format, None where the database holds no selfheal log yet."""
        has_meta = self._conn.execute("SELECT to_regclass('selfheal_meta') IS NOT NULL").fetchone()[0]
        if not has_meta:
            if self._conn.execute("SELECT to_regclass('events') IS NOT NULL").fetchone()[0]:
                raise NotASelfhealLog(f"{self.where}: an events table without selfheal's meta table: not a selfheal log")
            return None
        meta = dict(self._conn.execute("SELECT name, value FROM selfheal_meta").fetchall())
        if meta.get("application") != schema.APPLICATION:
            raise NotASelfhealLog(f"{self.where}: selfheal_meta names application {meta.get('application')!r}")
        version = int(meta.get("format_version", "0"))
        if version > schema.FORMAT_VERSION:
            raise NewerFormat(f"{self.where}: log format {version} was written by a newer selfheal; this build "
                              f"reads formats up to {schema.FORMAT_VERSION}")
        return version

    def _open(self, create: bool) -> None:
        if self._format() is None:
            if not create:
                raise LogMissing(f"{self.where}: holds no selfheal log; create one with `selfheal --db URL init`")
            with self._conn.transaction():
                # several nodes may create the log at once: one does, under a lock, the others find it
                self._conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (_LOCK_CLASS,))
                if self._format() is None:
                    encoding = self._conn.execute("SHOW server_encoding").fetchone()[0]
                    if encoding != "UTF8":  # the append function hashes text as UTF-8, as Python does
                        raise CannotOpen(f"{self.where}: the database's encoding is {encoding}; selfheal's log "
                                         "needs UTF8 (CREATE DATABASE ... ENCODING 'UTF8')")
                    for statement in schema.SCHEMA:
                        self._conn.execute(statement)
        self._install_append()

    def _install_append(self) -> None:
        """The append function, made where a log lacks it (one made before it existed); a body
        that is not this build's is refused rather than written through."""
        body = schema.append_body(self.APPEND_LOCK)
        found = self._conn.execute("SELECT prosrc FROM pg_proc WHERE oid = to_regproc(%s)", (schema.APPEND,)).fetchone()
        if found is not None and found[0] == body:
            return
        if found is not None:
            raise NotASelfhealLog(f"{self.where}: the append function {schema.APPEND} is not the one selfheal "
                                  "creates; `selfheal verify` as the table owner says more")
        try:
            with self._conn.transaction():
                self._conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (_LOCK_CLASS,))
                self._conn.execute(schema.append_function_sql(self.APPEND_LOCK))
        except pg_errors.InsufficientPrivilege:
            raise CannotOpen(f"{self.where}: the log has no append function {schema.APPEND} yet and this role may "
                             "not create it: open the log once as the table's owner (e.g. `selfheal --db URL "
                             "verify`)") from None

    # -- writing -------------------------------------------------------------------------

    def _write(self):
        return _Write(self)

    def _lock(self) -> None:
        """Take the append lock in this transaction (copy_into; appends take it in the function)."""
        self._conn.execute("SELECT pg_advisory_xact_lock(%s, 'events'::regclass::oid::int)", (_LOCK_CLASS,))

    def _call(self, requests: Sequence[AppendRequest], checkpoints: Sequence[CheckpointAdvance] = (),
              forgotten: str | None = None) -> list[list[int]]:
        """One call of the append function: every request, the checkpoint moves and the fence in
        one statement (one round trip, one implicit transaction)."""
        self._single.forget()  # the rows it writes are not kept: the next single append looks the head up
        payload = _encode([[r.stream, r.expected_version,
                             [(e.event_id, e.type, e.schema_version, e.occurred_at, e.correlation_id, e.causation_id,
                               e.data, e.key.hex() if e.key is not None else None) for e in r.events]]
                            for r in requests]).decode()
        params = (payload, _encode(self.fence).decode() if self.fence else None,
                  _encode([(m.handler, m.expected, m.position) for m in checkpoints]).decode() if checkpoints else None,
                  forgotten, utc_iso(self._clock()) if self._clock is not None else None)
        try:
            flat = self._calls.execute(_CALL, params).fetchone()[0]
        except psycopg.Error as exc:
            raise self._conflict(exc) from None
        out, at = [], 0
        for r in requests:
            out.append(flat[at:at + len(r.events)])
            at += len(r.events)
        return out

    def _conflict(self, exc: psycopg.Error) -> Exception:
        """The append function's refusal as the recorder's error (its detail is JSON)."""
        state = exc.sqlstate
        detail = json.loads(exc.diag.message_detail) if state in _CONFLICTS else None
        if state == schema.VERSION_CONFLICT:
            return ConcurrencyError(*detail)
        if state == schema.CHECKPOINT_CONFLICT:
            return CheckpointConflict(*detail)
        if state == schema.LEASE_LOST:
            return LeaseLost(f"{self.where}: the lease on {', '.join(detail)} passed to another runner: nothing of "
                             "this write was recorded")
        if state == schema.DUPLICATE:
            stream, repeats, stored, count, example = detail
            if repeats:
                return DuplicateEventConflict(f"stream {stream!r}: the batch repeats an event id")
            return DuplicateEventConflict(
                f"stream {stream!r}: {stored} of {count} event ids in the batch are stored already (e.g. {example}); "
                "a retry must resend the same batch")
        if isinstance(exc, psycopg.OperationalError):
            return StoreError(f"{self.where}: cannot write ({' '.join(str(exc).split())}): nothing of this write "
                              "was recorded")
        return exc

    def append(self, stream, events, expected_version=None) -> list[int]:
        if self.ONE_STATEMENT and len(events) == 1:
            position = self._one(stream, events[0], expected_version)
            if position is not None:
                return [position]
        return self._call([AppendRequest(stream, events, expected_version)])[0]

    def append_many(self, requests: Sequence[AppendRequest],
                    checkpoints: Sequence[CheckpointAdvance] = ()) -> list[list[int]]:
        if (self.ONE_STATEMENT and len(requests) == 1 and len(requests[0].events) == 1
                and len({m.handler for m in checkpoints}) == len(checkpoints)):
            r = requests[0]
            position = self._one(r.stream, r.events[0], r.expected_version, checkpoints)
            if position is not None:
                return [[position]]
        return self._call(requests, checkpoints)

    def _one(self, stream, event, expected, moves=()) -> int | None:
        """One event (with its fence and checkpoint moves: a runner's commit) is one INSERT;
        what it does not insert (a conflict, a retry, an empty log, a head moved meanwhile)
        goes to the function, which tells these apart."""
        try:
            return self._single.append(self, stream, event, expected, moves)
        except psycopg.Error as exc:
            self._single.forget()
            raise self._conflict(exc) from None

    # -- reading -------------------------------------------------------------------------

    def _select(self, columns: Sequence[str], bodies: Iterable[str] | None) -> tuple[str, list]:
        check_columns(columns)
        parts, params = [], []
        for column in columns:
            if column == "data" and bodies is not None:
                parts.append("CASE WHEN type = ANY(%s) THEN data END")
                params.append(list(bodies))
            else:
                parts.append(column)
        return ", ".join(parts), params

    def _paged(self, columns, bodies, clauses: list[str], params: list, after: int, *,
               limit: int | None = None, page: int = 1000) -> Iterator[list[tuple]]:
        select, select_params = self._select(columns, bodies)
        at = list(columns).index("position")
        sql = (f"SELECT {select} FROM events WHERE position > %s{''.join(f' AND {c}' for c in clauses)} "
               "ORDER BY position LIMIT %s")
        remaining = limit
        while remaining is None or remaining > 0:
            size = page if remaining is None else min(page, remaining)
            rows = self._conn.execute(sql, (*select_params, after, *params, size)).fetchall()
            if rows:
                yield rows
            if len(rows) < size:
                return
            after = rows[-1][at]
            if remaining is not None:
                remaining -= len(rows)

    def pages(self, columns, after=0, *, types=None, until=None, bodies=None, page=1000):
        clauses, params = [], []
        if types is not None:
            clauses.append("type = ANY(%s)")
            params.append(list(types))
        if until is not None:
            clauses.append("position <= %s")
            params.append(until)
        return self._paged(columns, bodies, clauses, params, after, page=page)

    def read(self, after=0, *, types=None, until=None, page=1000) -> Iterator[StoredEvent]:
        for rows in self.pages(COLUMNS, after, types=types, until=until, page=page):
            for row in rows:
                yield StoredEvent(*row)

    def query(self, where: EventFilter, limit: int | None = None) -> Iterator[StoredEvent]:
        clauses, params = [], []
        for op, value in (("position <=", where.until), ("stream =", where.stream),
                          ("correlation_id =", where.correlation_id),
                          ("occurred_at >=", where.occurred_since), ("occurred_at <", where.occurred_until)):
            if value is not None:
                clauses.append(f"{op} %s")
                params.append(value)
        if where.types is not None:
            clauses.append("type = ANY(%s)")
            params.append(list(where.types))
        for rows in self._paged(COLUMNS, None, clauses, params, where.after, limit=limit):
            for row in rows:
                yield StoredEvent(*row)

    def _rows(self, rest: str, params) -> list[StoredEvent]:
        return [StoredEvent(*row) for row in
                self._conn.execute(f"SELECT {', '.join(COLUMNS)} FROM events {rest}", params).fetchall()]

    def read_stream(self, stream: str, after_version: int = 0) -> Iterator[StoredEvent]:
        return iter(self._rows("WHERE stream = %s AND version > %s ORDER BY version", (stream, after_version)))

    def get(self, event_id: str) -> StoredEvent | None:
        rows = self._rows("WHERE event_id = %s", (event_id,))
        return rows[0] if rows else None

    def last_position(self) -> int:
        return self._conn.execute("SELECT COALESCE(MAX(position), 0) FROM events").fetchone()[0]

    def stream_version(self, stream: str) -> int:
        return self._conn.execute("SELECT COALESCE(MAX(version), 0) FROM events WHERE stream = %s",
                                  (stream,)).fetchone()[0]

    def checkpoint(self, handler: str) -> int:
        row = self._conn.execute("SELECT position FROM handler_checkpoints WHERE handler = %s", (handler,)).fetchone()
        return row[0] if row else 0

    def checkpoints(self) -> dict[str, int]:
        return dict(self._conn.execute("SELECT handler, position FROM handler_checkpoints ORDER BY handler").fetchall())

    def position_at(self, moment: str) -> int:
        return self._conn.execute(
            "SELECT COALESCE(GREATEST((SELECT MAX(position) FROM events WHERE recorded_at <= %s), "
            "(SELECT MAX(position) FROM events WHERE occurred_at <= %s)), 0)", (moment, moment)).fetchone()[0]

    def hash_at(self, position: int) -> str | None:
        row = self._conn.execute("SELECT hash FROM events WHERE position = %s", (position,)).fetchone()
        return row[0] if row else None

    def verify(self) -> VerifyReport:
        problems = schema.problems(self._conn)

        rows = (row for page in self.pages(COLUMNS, page=5000) for row in page)
        count, head, head_hash, broken = verify_rows(rows)
        if broken is None and problems:
            broken = (None, "; ".join(problems))
        return VerifyReport(ok=broken is None, events=count, head_position=head, head_hash=head_hash,
                            first_break=Break(*broken) if broken else None)

    # -- keys, secrets and snapshots beside the log ----------------------------------------

    def event_key(self, event_id: str) -> bytes | None:
        row = self._conn.execute("SELECT key FROM keys WHERE name = %s", (f"event:{event_id}",)).fetchone()
        return bytes(row[0]) if row else None

    def forget(self, event_id: str, record: AppendRequest) -> list[int]:
        # the key's row is dead once this commits; VACUUM reclaims its bytes (README)
        return self._call([record], forgotten=event_id)[0]

    def stored_secret(self, name: str) -> bytes | None:
        row = self._conn.execute("SELECT key FROM keys WHERE name = %s", (f"secret:{name}",)).fetchone()
        return bytes(row[0]) if row else None

    def secret(self, name: str) -> bytes:
        found = self.stored_secret(name)
        if found is None:
            with self._write():  # nodes asking at once: the first key stored is everyone's
                self._conn.execute("INSERT INTO keys (name, key) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                                   (f"secret:{name}", os.urandom(32)))
            found = self.stored_secret(name)
        return found

    def snapshot(self, key: str) -> tuple[int, str, bytes] | None:
        row = self._conn.execute("SELECT position, hash, data FROM view_snapshots WHERE key = %s", (key,)).fetchone()
        return (row[0], row[1], bytes(row[2])) if row else None

    def save_snapshot(self, key: str, position: int, chain: str, data: bytes) -> None:
        try:
            self._save_snapshot(key, position, chain, data)
        except psycopg.Error as exc:
            raise StoreError(f"{self.where}: the snapshot was not saved ({' '.join(str(exc).split())})") from None

    def _save_snapshot(self, key: str, position: int, chain: str, data: bytes) -> None:
        with self._write():
            self._conn.execute("DELETE FROM view_snapshots WHERE key != %s", (key,))  # retired fold code
            self._conn.execute("INSERT INTO view_snapshots (key, position, hash, data) VALUES (%s, %s, %s, %s) "
                               "ON CONFLICT (key) DO UPDATE SET position = excluded.position, hash = excluded.hash, "
                               "data = excluded.data", (key, position, chain, data))

    # -- runner leases (handlers/runtime.py) -----------------------------------------------

    def acquire_lease(self, name: str, holder: str, ttl_s: float) -> int | None:
        """Take or renew lease `name` for `holder`; its token, or None while another holds it.

        The token grows each time the lease changes holder, never on a renewal: a runner that
        holds token t and finds another token has lost the lease, whatever its clock says."""
        with self._write():
            row = self._conn.execute(
                "INSERT INTO leases AS l (name, holder, token, expires_at) "
                "VALUES (%s, %s, 1, clock_timestamp() + make_interval(secs => %s)) "
                "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at, "
                "token = CASE WHEN l.holder = excluded.holder THEN l.token ELSE l.token + 1 END "
                "WHERE l.holder = excluded.holder OR l.expires_at < clock_timestamp() RETURNING token",
                (name, holder, ttl_s)).fetchone()
        return row[0] if row else None

    def release_lease(self, name: str, holder: str) -> None:
        """Let the lease go at once (its token stays, so the next holder's is higher)."""
        with self._write():
            self._conn.execute("UPDATE leases SET expires_at = clock_timestamp() - interval '1 second' WHERE name = %s AND holder = %s",
                               (name, holder))

    def leases(self) -> dict[str, tuple[str, int, bool]]:
        """name -> (holder, token, live), for `state` and the tests."""
        return {name: (holder, token, live) for name, holder, token, live in self._conn.execute(
            "SELECT name, holder, token, expires_at > clock_timestamp() FROM leases ORDER BY name").fetchall()}

    def check_writable(self) -> None:
        pass

    def close(self) -> None:
        self._conn.close()


class _Write:
    """One write transaction; a lost connection or a server error is one StoreError naming the log."""

    def __init__(self, recorder: PostgresRecorder):
        self.recorder = recorder
        self.transaction = recorder._conn.transaction()

    def __enter__(self):
        try:
            return self.transaction.__enter__()
        except psycopg.OperationalError as exc:
            raise StoreError(f"{self.recorder.where}: cannot write ({' '.join(str(exc).split())})") from None

    def __exit__(self, kind, exc, tb):
        try:
            return self.transaction.__exit__(kind, exc, tb)
        except psycopg.OperationalError as failure:
            raise StoreError(f"{self.recorder.where}: cannot write ({' '.join(str(failure).split())}): nothing "
                             "of this write was recorded") from None


def copy_into(recorder: PostgresRecorder, rows: Iterable[tuple], keys: Iterable[tuple[str, bytes]],
              checkpoints: dict[str, int], batch: int = 5000) -> int:
    """Copy another log's rows (COLUMNS order, hashes and recorded times as stored), its keys and
    its checkpoints into `recorder`'s empty log, in one transaction; returns the rows copied.
    A log that holds events already is refused: two chains cannot be joined."""
    conn, count = recorder._conn, 0
    recorder._single.forget()
    with recorder._write():
        recorder._lock()
        if recorder.last_position():
            raise StoreError(f"{recorder.where}: the log holds {recorder.last_position()} events already; "
                             "migrate into an empty log")
        chunk: list[tuple] = []
        with conn.cursor() as cur:
            for row in rows:
                chunk.append(tuple(row))
                if len(chunk) == batch:
                    cur.executemany(_INSERT, chunk)
                    count, chunk = count + len(chunk), []
            if chunk:
                cur.executemany(_INSERT, chunk)
                count += len(chunk)
            cur.executemany("INSERT INTO keys (name, key) VALUES (%s, %s) ON CONFLICT (name) DO UPDATE "
                            "SET key = excluded.key", [(name, bytes(key)) for name, key in keys])
            cur.executemany("INSERT INTO handler_checkpoints (handler, position) VALUES (%s, %s) "
                            "ON CONFLICT (handler) DO UPDATE SET position = excluded.position",
                            list(checkpoints.items()))
    return count
