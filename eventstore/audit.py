"""Library functions behind the log's CLI commands (`init`, `events`, `verify`)."""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path

import msgspec

from selfheal.eventstore.errors import CorruptEvent, CorruptLog, UnknownEventType
from selfheal.eventstore.recorder import Break, EventFilter, StoredEvent, VerifyReport, parse_utc, utc_iso
from selfheal.eventstore.store import POSITION, Decoders, EventStore, is_server, open_store

DB_ENV = "SELFHEAL_DB"


def default_db_path(environ=os.environ) -> Path | str:
    """$SELFHEAL_DB (a path, or a postgresql:// URL as it is), else
    $XDG_STATE_HOME/selfheal/selfheal.db, else ~/.local/state/selfheal/selfheal.db."""
    if environ.get(DB_ENV):
        return environ[DB_ENV] if is_server(environ[DB_ENV]) else Path(environ[DB_ENV])
    state = environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "selfheal" / "selfheal.db"


def init(path: str | os.PathLike, *, synchronous: str = "FULL") -> dict:
    """Create (or migrate) a log at `path`; returns what is there."""
    with open_store(path, create=True, synchronous=synchronous) as store:
        where = store.recorder.where if is_server(path) else str(Path(path).resolve())  # no password shown
        return {"path": where, "events": store.last_position()}


def _time(value: str | datetime | None) -> str | None:
    if value is None:
        return None
    return utc_iso(parse_utc(value) if isinstance(value, str) else value)


def events(
    store: EventStore,
    *,
    types: Sequence[str] = (),
    stream: str | None = None,
    correlation: str | None = None,
    since: str | datetime | None = None,
    until: str | datetime | None = None,
    after: int = 0,
    as_of: int | str | None = None,
    limit: int | None = None,
) -> Iterator[StoredEvent]:
    """Stored rows matching every filter, oldest first; `since`/`until` bound occurred_at."""
    where = EventFilter(
        after=after, until=None if as_of is None else store.as_of(as_of),
        types=tuple(types) or None, stream=stream, correlation_id=correlation,
        occurred_since=_time(since), occurred_until=_time(until),
    )
    # sealed text is shown (and exported) open: the audit reader is the log's owner
    return map(store.opened_row, store.recorder.query(where, limit))


_encode = msgspec.json.Encoder().encode


def row_json(row: StoredEvent) -> str:
    """One JSON object: every column, `data` as an object (not a string)."""
    columns = msgspec.structs.asdict(row)
    columns["data"] = msgspec.Raw(row.data.encode())
    return _encode(columns).decode()


def verify(store: EventStore) -> VerifyReport:
    """The recorder's walk of the hash chain (and, on SQLite, of the triggers), then of the
    bodies up to where the chain holds: a row that is authentic but does not decode wedges
    every reader that reaches it, so it is a break too. Rows of a type or version this build
    does not know are left to the build that wrote them. The first break by position wins; a
    break of the whole log (position None) is kept in the problem's words."""
    report = store.recorder.verify()
    broken = report.first_break
    until = broken.position - 1 if broken is not None and broken.position is not None else report.head_position
    try:
        body = _first_undecodable(store, until)
    except CorruptLog:
        if broken is None:
            raise
        return report  # a damaged page: the chain's walk has said where already
    if body is None:
        return report
    if broken is not None and broken.position is None:
        body = Break(body.position, f"{body.problem}; and {broken.problem}")
    return msgspec.structs.replace(report, ok=False, first_break=body)


def _first_undecodable(store: EventStore, until: int) -> Break | None:
    if until <= 0:
        return None
    decoders = Decoders()
    for rows in store.rows(until=until):
        for row in rows:
            try:
                decoders.body(row)
            except UnknownEventType:
                continue
            except CorruptEvent as exc:
                prefix = f"position {row[POSITION]}: "
                problem = str(exc)
                return Break(row[POSITION], problem[len(prefix):] if problem.startswith(prefix) else problem)
    return None
