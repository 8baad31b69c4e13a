"""The API's functions for looking at the log: `ui` (the log in datasette) and `run_picture`
(a run drawn as an SVG timeline, `selfheal show RUN --svg FILE`). Conventions as in selfheal/api.py."""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from selfheal.edges import ui as datasette_ui
from selfheal.eventstore.errors import StoreFull, StoreReadOnly
from selfheal.eventstore.store import is_server
from selfheal.projections import queries, run_picture as drawing

from selfheal.conventions import Db, opened


def ui(*, db: Db = None, host: str = "127.0.0.1", port: int = 8001, token: str | None = None,
       report: Callable[[str], None] = print, synchronous: str = "FULL") -> None:
    """Serve the log read-only in datasette (the `ui` extra) until SIGINT/SIGTERM, with the shipped
    metadata and the browsing views; `report` hears the address to open (it carries the token).
    The views are created first where the log lacks them (a log made by an older build)."""
    if isinstance(db, str) and is_server(db):
        raise ValueError("--db: `selfheal ui` serves a SQLite log file; datasette does not read PostgreSQL")
    datasette_ui.require()  # before the log is touched: without datasette nothing is done
    with opened(db, False, synchronous) as store:
        recorder = store.recorder
        path = getattr(recorder, "path", None)
        if path is None:
            raise ValueError("`selfheal ui` serves a SQLite log file; this log is not one")
        try:
            recorder.ensure_views()
        except (StoreReadOnly, StoreFull) as exc:
            report(f"warning: the browsing views could not be created ({exc}); serving the tables only")
    datasette_ui.serve(Path(path), host=host, port=port, token=token, report=report)


def run_picture(run_id: str, *, as_of: int | str | datetime | None = None, db: Db = None,
                synchronous: str = "FULL") -> str:
    """Run `run_id` (a prefix will do) drawn as an SVG timeline: a row per candidate, its canary
    as a bar, outcome and fitness beside it, the promotion marked (projections/run_picture.py)."""
    with opened(db, False, synchronous) as store:
        chain = queries.show(store, run_id, as_of=as_of)
        events = [store.get(item.event_id) for item in chain.chain]
    return drawing.svg(drawing.picture(chain.run.run_id, [e for e in events if e is not None]))

