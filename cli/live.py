"""Live timelines for `heal`, `demo` and `run`: each event's line is printed as it is recorded,
not when the whole run is over (a real canary takes minutes).

The work runs in the calling thread with its own connection to the log; a printing thread
reads the log after the last position printed, a few times a second, and prints what is new. On a
terminal, a canary's long phases (start, load) show how long they have been running on
standard error; output that goes anywhere else (a pipe, a file) or is JSON gets the lines
only, even while standard error is still the terminal."""
from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import click

import selfheal
from selfheal.cli import exits
from selfheal.cli.describe import timeline_line
from selfheal.cli.output import event_json
from selfheal.eventstore.errors import StoreError
from selfheal.eventstore.store import is_server

POLL_S = 0.1
_LONG_PHASES = {"CanaryStarted": "canary starting", "CanaryLaunched": "canary loading"}


class Timeline:
    """What was printed: the last position, and each incident's outcome as it became known."""

    def __init__(self, after: int):
        self.position = after
        self.outcomes: dict[str, str] = {}  # correlation (incident) id -> outcome
        self.runs: dict[str, str] = {}  # correlation (incident) id -> its run
        self.waiting: dict[str, str] = {}  # correlation (incident) id -> its promotion waiting for approval
        self.phase: tuple[str, float] | None = None

    def note(self, row, recorded) -> None:
        e, incident = recorded.event, row.correlation_id or ""
        if row.type == "IncidentCaptured" and incident not in self.outcomes and e.source.kind != "canary":
            self.outcomes[incident] = "no failure found"
        elif row.type == "IntentDeduplicated" and incident in self.outcomes:
            self.outcomes[incident] = "folded into an intent already handled"
        elif row.type in ("RunFinished", "IntentArchived") and incident in self.outcomes:
            self.outcomes[incident] = e.outcome
        if row.type == "RunRequested":
            self.runs[incident] = e.run_id
        if row.type == "PromotionProposed" and e.requires_approval:  # prod: nothing is written until approved
            self.waiting[incident] = e.promotion_id
        self.phase = (_LONG_PHASES[row.type], time.monotonic()) if row.type in _LONG_PHASES else None


def follow_log(db: Path, work: Callable[[], object], *, as_json: bool, after: int | None = None,
               synchronous: str = "FULL") -> tuple[object, Timeline]:
    """Run `work()` and print every event recorded in `db` meanwhile, as it comes, from a
    printing thread. Returns what `work` returned and the timeline printed; `work`'s exception,
    or the printer's, is raised here.

    The work runs in the calling (main) thread, where a signal's KeyboardInterrupt lands: a
    stopped run unwinds through its `finally` clauses (a canary's process group is stopped)
    instead of dying with a daemon thread at exit."""
    if after is None:
        after = last_position(db, synchronous)
    timeline = Timeline(after)
    spinner = _Spinner(as_json)
    finished = threading.Event()
    failed: list[BaseException] = []

    def printer() -> None:
        try:
            while not finished.wait(POLL_S):
                _print_new(db, timeline, as_json, synchronous, spinner)
                spinner.show(timeline.phase)
        except Exception as exc:  # noqa: BLE001 - raised again in the calling thread
            failed.append(exc)

    thread = threading.Thread(target=printer, name="selfheal-print", daemon=True)
    thread.start()
    try:
        result = work()
    finally:
        finished.set()
        thread.join()
        try:  # what the work recorded last, interrupted or not
            _print_new(db, timeline, as_json, synchronous, spinner)
        finally:
            spinner.clear()
    if failed:
        raise failed[0]
    return result, timeline


def _exists(db: Path | str) -> bool:
    """A file log that is there yet, or a server log (a postgresql:// URL is never a path)."""
    return is_server(db) or Path(db).exists()


def last_position(db: Path, synchronous: str) -> int:
    """The log's last position: 0 when there is no log yet, or none that opens (the work says why)."""
    if not _exists(db):
        return 0
    try:
        with selfheal.open_db(db, synchronous=synchronous) as store:
            return store.last_position()
    except StoreError:
        return 0


def _print_new(db: Path, timeline: Timeline, as_json: bool, synchronous: str, spinner: "_Spinner") -> None:
    if not _exists(db):
        return
    try:
        store = selfheal.open_db(db, synchronous=synchronous)
    except StoreError:
        return  # still being created by the work: read it at the next poll
    with store:
        for row in list(selfheal.events(after=timeline.position, db=store)):
            recorded = store.typed(row)
            spinner.clear()
            click.echo(event_json(row) if as_json else timeline_line(recorded))
            timeline.note(row, recorded)
            timeline.position = row.position


class _Spinner:
    """`canary loading 42 s` on standard error, rewritten in place; only when both standard
    output and standard error are a terminal and the lines are text: `heal | grep`, `heal >
    file` and `--json` get no carriage returns or escapes mixed in."""

    def __init__(self, as_json: bool = False):
        self.enabled = not as_json and sys.stdout.isatty() and sys.stderr.isatty()
        self.shown = False

    def show(self, phase: tuple[str, float] | None) -> None:
        if not self.enabled or phase is None:
            return
        label, since = phase
        click.echo(f"\r  ... {label} {time.monotonic() - since:.0f} s", nl=False, err=True)
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            click.echo("\r\033[K", nl=False, err=True)
            self.shown = False


def outcome_code(outcomes: list[str]) -> int:
    """0 when every incident was healed or was healthy; 3 (not healed) otherwise."""
    fine = ("promoted", "no failure found", "folded into an intent already handled")
    return exits.OK if all(o in fine for o in outcomes) else exits.NOT_HEALED
