"""The embedded recorder: one SQLite file in WAL mode.

Design notes (why, not what):
- Writers take the lock up front (BEGIN IMMEDIATE) and then read the chain head, so
  positions, versions and hashes are computed by exactly one writer at a time: several
  processes can append to one file without lost, duplicated or reordered positions.
- The append-only rule is enforced by triggers inside the database, so no client, not even
  a hand-typed `sqlite3` session, can UPDATE or DELETE a row without first dropping them;
  dropping them is what `verify` reports, and any edit after that breaks the hash chain.
- Reads page by position instead of holding one cursor open, so a reader never pins an
  old WAL snapshot for the length of a long rebuild.
"""
from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path

import msgspec
import sqlite_utils

from selfheal.eventstore.errors import (
    CannotOpen, CheckpointConflict, ConcurrencyError, CorruptLog, DuplicateEventConflict, LogHasOtherNames,
    LogMissing, NewerFormat, NotASelfhealLog, StoreBusy, StoreError, StoreFull, StoreReadOnly,
)
from selfheal.eventstore.hashing import GENESIS, HASH, POSITION, chain_rows, verify_rows
from selfheal.eventstore.recorder import (
    COLUMNS, REQUIRED, AppendRequest, Break, CheckpointAdvance, EventFilter, NewEvent, Recorder, StoredEvent,
    VerifyReport, check_columns, system_clock, utc_iso,
)
from selfheal.eventstore.sqlite_views import replace_views, stale_views

#: 'SHL1': marks a SQLite file as a selfheal log (PRAGMA application_id)
APPLICATION_ID = 0x53484C31
FORMAT_VERSION = 2

_SELECT = "SELECT " + ", ".join(COLUMNS) + " FROM events"
_INSERT = f"INSERT INTO events ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"

APPEND_ONLY_TRIGGERS = {
    "events_refuse_update": "UPDATE",
    "events_refuse_delete": "DELETE",
}

SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")


#: how a full disk is said, in every error that reports one
DISK_FULL = "the disk is full"
#: SQLite's result codes of a file that cannot be opened, read or written as asked
_IO_CODES = ("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_IOERR", "SQLITE_FULL", "SQLITE_PERM")


def _code(exc: sqlite3.Error) -> str:
    return getattr(exc, "sqlite_errorname", None) or ""


def why_unwritable(path: str | os.PathLike, *, disk: bool = False) -> str | None:
    """Why the log at `path` cannot be written, as the file system says: read-only media, a file
    or folder this user may not write (SQLite creates the -wal and -shm in the folder), and with
    `disk` a full disk; None when nothing says so. A full disk is only ever an explanation of a
    write SQLite could not make: some file systems report no free space (FUSE without statfs),
    and a healthy log must not be opened read-only on their word."""
    path = Path(path).absolute()
    try:
        fs = os.statvfs(path.parent)
    except OSError:
        fs = None
    if fs is not None and fs.f_flag & os.ST_RDONLY:
        return "the log is on a read-only file system"
    if path.exists() and not os.access(path, os.W_OK):
        return "the log file is read-only to this user"
    if not os.access(path.parent, os.W_OK | os.X_OK):
        return "the log's folder is read-only to this user, so SQLite cannot create its -wal and -shm"
    if disk and fs is not None:
        blocks = fs.f_bfree if os.geteuid() == 0 else fs.f_bavail  # root may use the reserved blocks
        if (fs.f_blocks and not blocks) or (fs.f_files and not fs.f_favail):
            return DISK_FULL
    return None


def _unwritable_reason(path: Path, exc: sqlite3.Error, default: str | None = None) -> str | None:
    """Why SQLite's `exc` means the log cannot be written, or None when it means something else."""
    code = _code(exc)
    if not code.startswith(_IO_CODES):
        return None
    found = why_unwritable(path, disk=True)
    if found is not None:
        return found
    if code.startswith("SQLITE_FULL"):
        return f"{DISK_FULL} (or the log reached its size limit)"
    return default


def refuse_other_names(path: str | os.PathLike) -> None:
    """LogHasOtherNames when the file at `path` has more than one hard link. SQLite finds its
    -wal and -shm by the name it was opened with, and selfheal its runner lock: through a second
    name a process would write a second write-ahead log into the same file (SQLite does not
    support hard-linked databases) and take a second runner lock. Refusing is the only remedy
    that covers both: a lock by (device, inode) would keep a second runner out, not a second
    writer's write-ahead log."""
    try:
        links = os.stat(path).st_nlink
    except OSError:
        return  # no file: opening it says so
    if links > 1:
        raise LogHasOtherNames(
            f"{path}: the log file has {links} names (hard links); SQLite keeps a write-ahead log and "
            f"selfheal a runner lock beside each name, so two names can corrupt the log and let two runners "
            f"in: remove the other names (find them with `find / -xdev -samefile {path}`) or use a copy")


def trigger_sql(name: str) -> str:
    """The statement that creates append-only trigger `name`: what the migration runs, and what
    `verify` expects to find in sqlite_master."""
    action = APPEND_ONLY_TRIGGERS[name]
    return (f"CREATE TRIGGER {name} BEFORE {action} ON events BEGIN "
            f"SELECT RAISE(ABORT, 'selfheal: the events table is append-only: {action} is refused'); END")


#: a string literal, a quoted identifier, a word, or one other character
_SQL_TOKEN = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|\w+|[^\w\s]")


def normal_sql(sql: str) -> str:
    """`sql` as tokens: spacing and the case of keywords and names do not count, string literals do."""
    return " ".join(t if t[0] == "'" else t.strip('"').lower() for t in _SQL_TOKEN.findall(sql))


def trigger_problems(stored: Iterable[tuple[str, str, str | None]]) -> list[str]:
    """What is wrong with the triggers of a log, from its sqlite_master rows (name, table, sql):
    an append-only trigger missing or not as the migration creates it (a `WHEN 0`, another
    body), or a trigger selfheal did not create on the events table (one that drops inserts)."""
    found = {name: (table, sql) for name, table, sql in stored}
    missing = [name for name in APPEND_ONLY_TRIGGERS if name not in found]
    replaced = [name for name in APPEND_ONLY_TRIGGERS
                if name in found and normal_sql(found[name][1] or "") != normal_sql(trigger_sql(name))]
    foreign = sorted(name for name, (table, _) in found.items()
                     if table.lower() == "events" and name not in APPEND_ONLY_TRIGGERS)
    problems = []
    if missing:
        problems.append(f"append-only triggers are missing: {', '.join(missing)}")
    if replaced:
        problems.append(f"append-only triggers were replaced (their SQL is not what selfheal creates): "
                        f"{', '.join(replaced)}")
    if foreign:
        problems.append(f"triggers selfheal did not create are on the events table: {', '.join(foreign)}")
    return problems


#: the events table of format 1, as logs hold it: (column, type, may be NULL), in order.
#: A migration records its format as it was; StoredEvent must match it (tests/eventstore/test_columns.py)
FORMAT_1_COLUMNS = (
    ("position", int, False), ("event_id", str, False), ("stream", str, False), ("version", int, False),
    ("type", str, False), ("schema_version", int, False), ("occurred_at", str, False), ("recorded_at", str, False),
    ("correlation_id", str, True), ("causation_id", str, True), ("data", str, False), ("hash", str, False),
)


def _migration_1(db: sqlite_utils.Database) -> None:
    db["events"].create(
        {name: kind for name, kind, _ in FORMAT_1_COLUMNS},
        pk="position",
        not_null={name for name, _, nullable in FORMAT_1_COLUMNS if not nullable and name != "position"},
    )
    db["events"].create_index(["event_id"], index_name="events_event_id", unique=True)
    db["events"].create_index(["stream", "version"], index_name="events_stream_version", unique=True)
    db["events"].create_index(["type", "position"], index_name="events_type")
    db["events"].create_index(["correlation_id"], index_name="events_correlation")
    db["events"].create_index(["recorded_at"], index_name="events_recorded_at")
    for name in APPEND_ONLY_TRIGGERS:
        db.execute(trigger_sql(name))
    db["handler_checkpoints"].create(
        {"handler": str, "position": int, "updated_at": str}, pk="handler", not_null={"position"}
    )


def _migration_2(db: sqlite_utils.Database) -> None:
    """Keys kept beside the log, outside the hash chain: each sealed event's key
    (`event:<event_id>`, eventstore/sealing.py) and the log's own secrets (`secret:<name>`)."""
    db.execute("CREATE TABLE keys (name TEXT PRIMARY KEY, key BLOB NOT NULL)")


#: index i migrates a log from format i to i + 1
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_migration_1, _migration_2]
assert len(MIGRATIONS) == FORMAT_VERSION


def _among(column: str, values: Iterable[str], params: list) -> str:
    """`column IN (?, ...)`, its values appended to `params`."""
    values = list(values)
    params.extend(values)
    return f"{column} IN ({','.join('?' * len(values))})"


class _Select(msgspec.Struct, frozen=True):
    """A SELECT list of columns, its parameters, and where to look in the rows it reads."""

    sql: str
    params: tuple
    position: int
    #: the columns that may not be empty in a row read (None there: a damaged file)
    required: tuple[int, ...]


def _select(columns: Sequence[str], bodies: Iterable[str] | None = None) -> _Select:
    """Read `columns`; `data` only in rows whose type is in `bodies` (None: in every row).

    Elsewhere `data` is NULL, and SQLite does not even visit the pages that hold the body; a
    body that is missing where it is read is the decoder's to report (`store.Decoders`)."""
    check_columns(columns)
    parts, params = [], []
    for column in columns:
        if column == "data" and bodies is not None:
            parts.append(f"CASE WHEN {_among('type', bodies, params)} THEN data END")
        else:
            parts.append(column)
    required = tuple(i for i, c in enumerate(columns) if c in REQUIRED and (c != "data" or bodies is None))
    return _Select(", ".join(parts), tuple(params), columns.index("position"), required)


_ROWS = _select(COLUMNS)


class SQLiteRecorder(Recorder):
    def __init__(
        self,
        path: str | os.PathLike,
        *,
        create: bool = False,
        synchronous: str = "FULL",
        busy_timeout_s: float = 10.0,
        max_busy_retries: int = 20,
        clock: Callable[[], datetime] = system_clock,
    ):
        self.path = Path(path)
        synchronous = synchronous.upper()
        if synchronous not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous={synchronous!r}: allowed values are {', '.join(SYNCHRONOUS_MODES)}")
        self._clock = clock
        self._max_busy_retries = max_busy_retries
        existed = self.path.exists() and self.path.stat().st_size > 0
        if not existed and not create:
            what = "is empty (0 bytes)" if self.path.exists() else "does not exist"
            raise LogMissing(f"{self.path}: {what}; create a log with `selfheal init`")
        refuse_other_names(self.path)
        if create and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        if existed and not os.access(self.path, os.R_OK):
            raise CannotOpen(f"{self.path}: cannot open: the file is not readable by this user")
        #: why the log is open for reading only (read-only media, a full disk); None: writable
        self.read_only: str | None = None
        self._timeout = busy_timeout_s
        #: the secrets of a read-only log that has none stored: this process's, never recorded
        self._unstored: dict[str, bytes] = {}
        # what the file system says first, so that a log that cannot be written is not even tried
        # (a try would create a -wal and -shm where it can)
        reason = why_unwritable(self.path)
        if not existed:
            if reason is not None:
                raise self._refusal(reason, "the log cannot be created here")
            self._create(synchronous)
            return
        if reason is None:
            reason = self._open_writable(existed, synchronous)
            if reason is None:
                return
        if create:  # the command records: say so now, before it does anything
            raise self._refusal(reason, "this command records, and the log can only be opened read-only")
        self._open_read_only(reason)

    def _create(self, synchronous: str) -> None:
        """A new log at the path, owner-only (it holds log excerpts and configs of production
        servers); a file this call created and could not make a log is removed again."""
        created = not self.path.exists()
        if created:
            try:
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:
                # another process created it between the look and the create: the race's loser
                # opens the winner's file, as it would had it looked a moment later
                created = False
            except OSError as exc:
                raise CannotOpen(f"{self.path}: cannot create the log ({exc.strerror})") from None
        try:
            reason = self._open_writable(False, synchronous)
        except BaseException:
            if created and self.path.stat().st_size == 0:
                self.path.unlink()
            raise
        if reason is not None:
            if created and self.path.stat().st_size == 0:
                self.path.unlink()
            raise self._refusal(reason, "the log cannot be created here")

    # -- opening and migrating ---------------------------------------------------------

    def _connect(self, target: str | Path, uri: bool = False) -> None:
        self._conn = sqlite3.connect(target, uri=uri, isolation_level=None, timeout=self._timeout,
                                     check_same_thread=False)

    def _open_writable(self, existed: bool, synchronous: str) -> str | None:
        """Open the log for reading and writing; None when it is, else why it cannot be written
        (what the read-only open reports on every write). Anything else is one StoreError."""
        self._connect(self.path)
        try:
            self._open(existed, synchronous)
            return None
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            reason = _unwritable_reason(self.path, exc)
            if reason is None:
                raise self._unopenable(exc) from None
            return reason
        except BaseException:
            self._conn.close()
            raise

    def _open_read_only(self, reason: str) -> None:
        """Open the log for queries only (SQLite `mode=ro`). Where SQLite cannot even create the
        -shm it reads through, open it as `immutable` (no -wal, -shm or locks), unless a -wal
        holds events not yet in the file: those would be skipped, so that is refused instead.
        With no -shm there is no writer, and where none can be created (a read-only folder, a
        full disk) `immutable` is taken at once: the try would leave files behind."""
        uri = f"file:{urllib.parse.quote(str(self.path.absolute()))}?mode=ro"
        wal, shm = Path(f"{self.path}-wal"), Path(f"{self.path}-shm")
        nothing_in_wal = not wal.exists() or wal.stat().st_size == 0
        creatable = os.access(self.path.absolute().parent, os.W_OK | os.X_OK) and not reason.startswith(DISK_FULL)
        for immutable in (False, True) if shm.exists() or creatable or not nothing_in_wal else (True,):
            self._connect(f"{uri}&immutable=1" if immutable else uri, uri=True)
            try:
                version = self._format(existed=True)
                if version < FORMAT_VERSION:
                    raise self._refusal(reason, f"log format {version} must be migrated to format {FORMAT_VERSION} "
                                                "before this build reads it, and migrating writes")
                self.read_only = reason
                return
            except sqlite3.DatabaseError as exc:
                self._conn.close()
                if immutable or _unwritable_reason(self.path, exc, reason) is None:
                    raise self._unopenable(exc) from None
                if not nothing_in_wal:
                    raise CannotOpen(
                        f"{self.path}: {reason}, and its {wal.name} holds events not yet in the file, which "
                        f"SQLite cannot read without writing beside the log ({exc}); copy the log and its -wal "
                        "to writable storage to read them") from None
            except BaseException:
                self._conn.close()
                raise

    def _unopenable(self, exc: sqlite3.DatabaseError) -> StoreError:
        """The one error of a log that opens neither way: cannot open, or not a database."""
        if _code(exc).startswith(_IO_CODES):
            return CannotOpen(f"{self.path}: cannot open ({exc})")
        return NotASelfhealLog(f"{self.path}: not a SQLite database ({exc})")

    def _refusal(self, reason: str, what: str = "the log is open read-only, and nothing was recorded") -> StoreError:
        """What a write on a log that cannot be written raises: the file, the reason, and what
        it means. A full disk is a StoreFull, anything else a StoreReadOnly."""
        kind = StoreFull if reason.startswith(DISK_FULL) else StoreReadOnly
        return kind(f"{self.path}: {reason}: {what}")

    def check_writable(self) -> None:
        """Raise what a write would, before anything is done that only a write could record."""
        if self.read_only is not None:
            raise self._refusal(self.read_only)

    def _format(self, existed: bool) -> int:
        """The log's format version, once the file is known to be a selfheal log this build reads."""
        conn = self._conn
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        being_created = existed and app_id == 0 and self._being_created()
        if existed and app_id == 0 and not being_created:
            # its creator may have committed the migration between these reads (each statement
            # sees the file as it is then); the tables and the id are written in one transaction
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        if existed and app_id != APPLICATION_ID and not being_created:
            raise NotASelfhealLog(
                f"{self.path}: a SQLite database, but not a selfheal log (application_id {app_id:#x})"
            )
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > FORMAT_VERSION:
            raise NewerFormat(
                f"{self.path}: log format {version} was written by a newer selfheal; "
                f"this build reads formats up to {FORMAT_VERSION}"
            )
        return version

    def _being_created(self) -> bool:
        """A database with nothing in it yet: a log another process has just created and is
        still migrating (its first write makes the file before the tables exist). It is taken
        as a new log; the migration re-reads the format under the write lock."""
        return (self._conn.execute("PRAGMA user_version").fetchone()[0] == 0
                and self._conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0)

    def _open(self, existed: bool, synchronous: str) -> None:
        version = self._format(existed)
        conn = self._conn
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        # a forgotten key is overwritten with zeros where it stood, not just unlinked
        conn.execute("PRAGMA secure_delete=ON")
        if version < FORMAT_VERSION:
            self._migrate()

    def _migrate(self) -> None:
        db = sqlite_utils.Database(self._conn)
        with self._transaction():
            # read under the write lock: another process may have migrated meanwhile
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            for step in MIGRATIONS[version:]:
                step(db)
            replace_views(self._conn)  # derived, outside the format number (eventstore/sqlite_views.py)
            self._conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
            self._conn.execute(f"PRAGMA user_version={FORMAT_VERSION}")

    def ensure_views(self) -> bool:
        """Create the browsing views (eventstore/sqlite_views.py) where the log lacks them or holds
        other definitions; True when it changed the file. Writes, so a read-only log raises."""
        stored = dict(self._conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'view'"))
        if not stale_views(stored, normal_sql):
            return False
        with self._transaction():
            replace_views(self._conn)
        return True

    # -- transactions ------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self):
        """BEGIN IMMEDIATE ... COMMIT, rolled back whole on any error; a write the file refuses
        (a full disk, read-only media) is one StoreError naming the file and the reason."""
        self._begin()
        try:
            yield
            self._conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            self._rollback()
            failure = self._failed_write(exc)
            if failure is None:
                raise
            raise failure from None
        except BaseException:
            self._rollback()
            raise

    def _failed_write(self, exc: sqlite3.DatabaseError) -> StoreError | None:
        code = _code(exc)
        if code.startswith("SQLITE_FULL"):
            return StoreFull(f"{self.path}: {DISK_FULL} (or the log reached its size limit): nothing of this "
                             "write was recorded")
        if code.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
            return CorruptLog(f"{self.path}: the log is damaged ({exc}); nothing of this write was recorded; "
                              "`selfheal verify` tells where")
        reason = _unwritable_reason(self.path, exc)
        if reason is not None:
            return self._refusal(reason, "nothing of this write was recorded")
        if code.startswith(_IO_CODES):
            return StoreError(f"{self.path}: cannot write ({exc}): nothing of this write was recorded")
        return None

    def _begin(self) -> None:
        self.check_writable()
        for attempt in range(self._max_busy_retries + 1):
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise self._failed_write(exc) or exc from None
                if attempt == self._max_busy_retries:
                    raise StoreBusy(f"{self.path}: still locked by other writers after "
                                    f"{self._max_busy_retries} retries") from None
                time.sleep(min(0.5, 0.01 * 2 ** attempt))

    def _rollback(self) -> None:
        # SQLite may have rolled back already (a full disk does): a second ROLLBACK would
        # raise "no transaction is active" and hide the real error
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def _rows(self, select: _Select, rest: str, params) -> list[tuple]:
        """Rows of `SELECT select FROM events rest`; a damaged file or row is one StoreError
        naming the file (and position)."""
        try:
            rows = self._conn.execute(f"SELECT {select.sql} FROM events {rest}", (*select.params, *params)).fetchall()
        except sqlite3.DatabaseError as exc:
            raise CorruptLog(f"{self.path}: the log is damaged ({exc}); `selfheal verify` tells where") from None
        # every row of every read passes here: a test per required column, no slice, no call.
        # (SQL cannot do it: SQLite answers `x IS NULL` on a NOT NULL column without reading x)
        required = select.required
        for row in rows:
            for i in required:
                if row[i] is None:
                    raise CorruptLog(f"{self.path}: position {row[select.position]}: damaged row (a required "
                                     "column is empty); `selfheal verify` tells where the log breaks")
        return rows

    def _head(self) -> tuple[int, str]:
        row = self._conn.execute("SELECT position, hash FROM events ORDER BY position DESC LIMIT 1").fetchone()
        return (row[0], row[1]) if row else (0, GENESIS)

    def _stream_version(self, stream: str) -> int:
        row = self._conn.execute("SELECT MAX(version) FROM events WHERE stream = ?", (stream,)).fetchone()
        return row[0] or 0

    def _stored_positions(self, events: Sequence[NewEvent]) -> dict[str, int]:
        ids = [e.event_id for e in events]
        found: dict[str, int] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            q = f"SELECT event_id, position FROM events WHERE event_id IN ({','.join('?' * len(chunk))})"
            found.update(self._conn.execute(q, chunk).fetchall())
        return found

    def _append_locked(self, request: AppendRequest, head: list) -> list[int]:
        events = request.events
        if not events:
            return []
        version = self._stream_version(request.stream)
        if request.expected_version is not None and request.expected_version != version:
            if self._stored_positions(events):
                return self._replayed(request)  # a retry of a batch that already landed
            raise ConcurrencyError(request.stream, request.expected_version, version)
        rows = chain_rows(events, request.stream, position=head[0], version=version,
                          previous=head[1], recorded_at=utc_iso(self._clock()))
        # the common case is new ids, so insert first and let the unique index find
        # stored ones, instead of looking every id up before each insert
        self._conn.execute("SAVEPOINT batch")
        try:
            self._conn.executemany(_INSERT, rows)
        except sqlite3.IntegrityError:
            self._conn.execute("ROLLBACK TO batch")
            self._conn.execute("RELEASE batch")
            return self._replayed(request)
        self._conn.execute("RELEASE batch")
        keys = [(f"event:{e.event_id}", e.key) for e in events if e.key is not None]
        if keys:
            self._conn.executemany("INSERT OR IGNORE INTO keys (name, key) VALUES (?, ?)", keys)
        head[0], head[1] = rows[-1][POSITION], rows[-1][HASH]
        return [r[POSITION] for r in rows]

    def _replayed(self, request: AppendRequest) -> list[int]:
        """Positions of a batch whose ids are all stored; refuses a batch that mixes."""
        events = request.events
        stored = self._stored_positions(events)
        if len(stored) == len(events):
            return [stored[e.event_id] for e in events]
        if len({e.event_id for e in events}) != len(events):
            raise DuplicateEventConflict(f"stream {request.stream!r}: the batch repeats an event id")
        if not stored:
            raise  # pragma: no cover - an integrity error that is not about event ids
        raise DuplicateEventConflict(
            f"stream {request.stream!r}: {len(stored)} of {len(events)} event ids in the batch "
            f"are stored already (e.g. {next(iter(stored))}); a retry must resend the same batch"
        )

    def append(self, stream: str, events: Sequence[NewEvent], expected_version: int | None = None) -> list[int]:
        return self.append_many([AppendRequest(stream, events, expected_version)])[0]

    def append_many(
        self, requests: Sequence[AppendRequest], checkpoints: Sequence[CheckpointAdvance] = ()
    ) -> list[list[int]]:
        with self._transaction():
            if checkpoints:
                # one read for every move: a runner's commit carries the moves of all its handlers
                stored = dict(self._conn.execute(
                    f"SELECT handler, position FROM handler_checkpoints WHERE handler IN "
                    f"({', '.join('?' * len(checkpoints))})", [move.handler for move in checkpoints]))
                for move in checkpoints:
                    current = stored.get(move.handler, 0)
                    if current != move.expected:
                        raise CheckpointConflict(move.handler, move.expected, current)
            head = list(self._head())
            positions = [self._append_locked(r, head) for r in requests]
            if checkpoints:
                now = utc_iso(self._clock())
                self._conn.executemany(
                    "INSERT INTO handler_checkpoints (handler, position, updated_at) VALUES (?, ?, ?) "
                    "ON CONFLICT(handler) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at",
                    [(move.handler, move.position, now) for move in checkpoints],
                )
        return positions

    # -- reading -------------------------------------------------------------------------

    def read(self, after: int = 0, *, types: Iterable[str] | None = None, until: int | None = None,
             page: int = 1000) -> Iterator[StoredEvent]:
        for rows in self.pages(COLUMNS, after, types=types, until=until, page=page):
            for row in rows:
                yield StoredEvent(*row)

    def pages(self, columns: Sequence[str], after: int = 0, *, types: Iterable[str] | None = None,
              until: int | None = None, bodies: Iterable[str] | None = None,
              page: int = 1000) -> Iterator[list[tuple]]:
        clauses, params = [], []
        if types is not None:
            clauses.append(_among("type", types, params))
        if until is not None:
            clauses.append("position <= ?")
            params.append(until)
        return self._paged(columns, bodies, clauses, params, after, page=page)

    def query(self, where: EventFilter, limit: int | None = None) -> Iterator[StoredEvent]:
        clauses, params = [], []
        for op, value in (
            ("position <=", where.until), ("stream =", where.stream),
            ("correlation_id =", where.correlation_id),
            ("occurred_at >=", where.occurred_since), ("occurred_at <", where.occurred_until),
        ):
            if value is not None:
                clauses.append(f"{op} ?")
                params.append(value)
        if where.types is not None:
            clauses.append(_among("type", where.types, params))
        for rows in self._paged(COLUMNS, None, clauses, params, where.after, limit=limit):
            for row in rows:
                yield StoredEvent(*row)

    def _paged(self, columns: Sequence[str], bodies: Iterable[str] | None, clauses: list[str], params: list,
               after: int, *, limit: int | None = None, page: int = 1000) -> Iterator[list[tuple]]:
        """Pages of rows with position > after that match every clause, in position order."""
        select = _select(columns, bodies)
        rest = f"WHERE position > ?{''.join(f' AND {c}' for c in clauses)} ORDER BY position LIMIT ?"
        remaining = limit
        while remaining is None or remaining > 0:
            size = page if remaining is None else min(page, remaining)
            rows = self._rows(select, rest, (after, *params, size))
            if rows:
                yield rows
            if len(rows) < size:
                return
            after = rows[-1][select.position]
            if remaining is not None:
                remaining -= len(rows)

    def read_stream(self, stream: str, after_version: int = 0) -> Iterator[StoredEvent]:
        for row in self._rows(_ROWS, "WHERE stream = ? AND version > ? ORDER BY version", (stream, after_version)):
            yield StoredEvent(*row)

    def get(self, event_id: str) -> StoredEvent | None:
        rows = self._rows(_ROWS, "WHERE event_id = ?", (event_id,))
        return StoredEvent(*rows[0]) if rows else None

    def last_position(self) -> int:
        return self._conn.execute("SELECT COALESCE(MAX(position), 0) FROM events").fetchone()[0]

    def stream_version(self, stream: str) -> int:
        return self._stream_version(stream)

    # -- keys beside the log ---------------------------------------------------------------

    def event_key(self, event_id: str) -> bytes | None:
        row = self._conn.execute("SELECT key FROM keys WHERE name = ?", (f"event:{event_id}",)).fetchone()
        return row[0] if row else None

    def forget(self, event_id: str, record: AppendRequest) -> list[int]:
        with self._transaction():
            self._conn.execute("DELETE FROM keys WHERE name = ?", (f"event:{event_id}",))
            head = list(self._head())
            positions = self._append_locked(record, head)
        # the WAL still holds the page images the key was written in: fold them into the file
        # (where secure_delete zeroed the key) and truncate it; a reader holding the WAL open
        # delays this, which is retried on the next forget
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return positions

    def secret(self, name: str) -> bytes:
        row = self._conn.execute("SELECT key FROM keys WHERE name = ?", (f"secret:{name}",)).fetchone()
        if row:
            return row[0]
        if self.read_only is not None:
            # a log that cannot be written keeps no new secret, and records nothing made with one
            return self._unstored.setdefault(name, os.urandom(32))
        with self._transaction():
            self._conn.execute("INSERT OR IGNORE INTO keys (name, key) VALUES (?, ?)",
                               (f"secret:{name}", os.urandom(32)))
            row = self._conn.execute("SELECT key FROM keys WHERE name = ?", (f"secret:{name}",)).fetchone()
        return row[0]

    def checkpoint(self, handler: str) -> int:
        row = self._conn.execute("SELECT position FROM handler_checkpoints WHERE handler = ?", (handler,)).fetchone()
        return row[0] if row else 0

    def checkpoints(self) -> dict[str, int]:
        return dict(self._conn.execute("SELECT handler, position FROM handler_checkpoints ORDER BY handler"))

    def position_at(self, moment: str) -> int:
        # recorded_at is written in position order by the single writer, so the last row
        # recorded at or before `moment` bounds what the system had seen at that time; a row
        # that occurred by then stands there too (recorder.Recorder.position_at says why)
        row = self._conn.execute(
            "SELECT MAX(p) FROM (SELECT MAX(position) AS p FROM events WHERE recorded_at <= ? "
            "UNION ALL SELECT MAX(position) FROM events WHERE occurred_at <= ?)", (moment, moment)).fetchone()
        return row[0] or 0

    def verify(self) -> VerifyReport:
        problems = trigger_problems(self._conn.execute(
            "SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'trigger'"))

        def rows():
            after = 0
            while True:
                try:
                    page = self._conn.execute(f"{_SELECT} WHERE position > ? ORDER BY position LIMIT 5000",
                                              (after,)).fetchall()
                except sqlite3.DatabaseError as exc:
                    raise CorruptLog(f"{self.path}: the log is damaged after position {after} ({exc})") from None
                yield from page
                if len(page) < 5000:
                    return
                after = page[-1][POSITION]

        count, head, head_hash, broken = verify_rows(rows())
        if broken is None and problems:
            broken = (None, "; ".join(problems))
        return VerifyReport(ok=broken is None, events=count, head_position=head, head_hash=head_hash,
                            first_break=Break(*broken) if broken else None)

    # -- view snapshots: a cache beside the log (projections/snapshots.py) -------------------

    keeps_snapshots = True

    def hash_at(self, position: int) -> str | None:
        row = self._conn.execute("SELECT hash FROM events WHERE position = ?", (position,)).fetchone()
        return row[0] if row else None

    def stored_secret(self, name: str) -> bytes | None:
        row = self._conn.execute("SELECT key FROM keys WHERE name = ?", (f"secret:{name}",)).fetchone()
        return row[0] if row else None

    def snapshot(self, key: str) -> tuple[int, str, bytes] | None:
        try:
            row = self._conn.execute("SELECT position, hash, data FROM view_snapshots WHERE key = ?", (key,)).fetchone()
        except sqlite3.OperationalError:
            return None  # no snapshot was ever saved: the table is made by the first save
        return tuple(row) if row else None

    def save_snapshot(self, key: str, position: int, chain: str, data: bytes) -> None:
        try:
            with self._transaction():
                self._conn.execute("CREATE TABLE IF NOT EXISTS view_snapshots (key TEXT PRIMARY KEY, "
                                   "position INTEGER NOT NULL, hash TEXT NOT NULL, data BLOB NOT NULL)")
                self._conn.execute("DELETE FROM view_snapshots WHERE key != ?", (key,))  # retired fold code
                self._conn.execute("INSERT OR REPLACE INTO view_snapshots (key, position, hash, data) "
                                   "VALUES (?, ?, ?, ?)", (key, position, chain, data))
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: the snapshot was not saved ({exc})") from None

    def close(self) -> None:
        self._conn.close()

    @property
    def connection(self) -> sqlite3.Connection:
        """The raw connection, for read-only queries by tools (sqlite-utils, audit)."""
        return self._conn
