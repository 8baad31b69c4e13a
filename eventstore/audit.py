"""Library functions behind the log's CLI commands (`init`, `events`, `verify`)."""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path

import msgspec

from selfheal.eventstore.recorder import EventFilter, StoredEvent, VerifyReport, parse_utc, utc_iso
from selfheal.eventstore.store import EventStore, open_store

DB_ENV = "SELFHEAL_DB"


def default_db_path(environ=os.environ) -> Path:
    """$SELFHEAL_DB, else $XDG_STATE_HOME/selfheal/selfheal.db, else ~/.local/state/selfheal/selfheal.db."""
    if environ.get(DB_ENV):
        return Path(environ[DB_ENV])
    state = environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "selfheal" / "selfheal.db"


def init(path: str | os.PathLike, *, synchronous: str = "FULL") -> dict:
    """Create (or migrate) a log at `path`; returns what is there."""
    with open_store(path, create=True, synchronous=synchronous) as store:
        return {"path": str(Path(path).resolve()), "events": store.last_position()}


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
    return store.recorder.verify()
