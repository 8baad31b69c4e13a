"""selfheal's Python API: one function per CLI command, of the same name, all re-exported
as `selfheal.<name>`. This module holds the log's and the loop's commands (init, events,
verify, rebuild, diagnose, observe, run, heal, demo); review.py those that review and govern
what the loop did; conventions.py how `db=` and `config=` are found.

The library is the product and `selfheal` the command line is a thin shell over it: each
command parses its arguments, calls the function of its name and prints the result.
A command of a group is `<group>_<command>` (`selfheal rules list` is `rules_list`), and so
is `selfheal baseline import` (`baseline_import`).

The conventions every function follows:

- `db=`: the event log, as a path (`str` or `os.PathLike`) or an open `EventStore`. None:
  $SELFHEAL_DB, else $XDG_STATE_HOME/selfheal/selfheal.db. A path is opened for the call and
  closed after it (with `synchronous=`, "FULL" by default); a store is used as it is and left
  open. Functions that record create a missing log; the others refuse it, as the CLI does.
- `config=`: the settings, as a path of a selfheal.toml or a `Settings`. None:
  $SELFHEAL_CONFIG, else ./selfheal.toml if present, else the built-in defaults.
- `db`, `config` and every option are keywords; what the CLI takes as arguments (a run id, a
  promotion id, files) are positional.
- Results are the typed values the library keeps (msgspec Structs, lists of them), never text.
- Log content (`diagnose`, `rules_test`) is a `pathlib.Path` (or any os.PathLike: a file), `bytes`,
  or text through the keyword `text=`. A plain `str` there is refused with a TypeError: it
  could be a file name or a log line, and reading the one as the other would give a wrong answer
  without a word. Where a parameter can only be a path (`files`, `rules_file`, `db`), a str is
  a path.
- Functions that record take `clock=` (a callable returning an aware datetime), for tests.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime

import msgspec

from selfheal import projections
from selfheal.edges import deployments as deployment_edges
from selfheal.edges import demo as demo_edge
from selfheal.edges import live
from selfheal.edges.follow import follow as follow_file
from selfheal.edges.journal import journal as journal_lines
from selfheal.edges.sim import bundled_scenarios, load_scenario
from selfheal.eventstore import audit, migration
from selfheal.eventstore.audit import default_db_path
from selfheal.eventstore.recorder import StoredEvent, VerifyReport, system_clock
from selfheal.eventstore.store import EventStore, Recorded, typed
from selfheal.handlers import leases, loop, observer, rules_lifecycle
from selfheal.handlers.observer import Diagnosis
from selfheal.handlers.runtime import RunReport
from selfheal.schemas.config import Settings
from selfheal.schemas.events import IncidentSource
from selfheal.schemas.serving import ServingConfig

from selfheal.conventions import (
    Clock, Config, Db, LogContent, as_config, chosen_deployment, chosen_node, load_config, log_content, open_db, opened,
    paths_of,
)


# -- the log itself: init, events, verify, rebuild ----------------------------------------------

def init(db: str | os.PathLike | None = None, *, synchronous: str = "FULL") -> dict:
    """Create the event log at `db` (or migrate an older one); returns {"path", "events"}."""
    if isinstance(db, EventStore):
        raise TypeError("init(): give the path of the log to create, not an open store")
    return audit.init(default_db_path() if db is None else db, synchronous=synchronous)


def events(*, types: Iterable[str] = (), stream: str | None = None, correlation: str | None = None,
           since: str | datetime | None = None, until: str | datetime | None = None, after: int = 0,
           as_of: int | str | datetime | None = None, limit: int | None = None,
           db: Db = None, synchronous: str = "FULL") -> Iterator[StoredEvent]:
    """Stored rows matching every filter, oldest first (`since`/`until` bound occurred_at;
    `as_of`: what the log held at a position or time). `typed(row)` decodes one's body.

    The log is opened at once (a missing one raises here); a log opened from a path is closed
    when the iterator is exhausted or closed."""
    store = open_db(db, synchronous=synchronous)
    owned = store is not db
    try:
        rows = audit.events(store, types=tuple(types), stream=stream, correlation=correlation, since=since,
                            until=until, after=after, as_of=as_of, limit=limit)
    except BaseException:
        if owned:
            store.close()
        raise
    return _closing(rows, store if owned else None)


def _closing(rows: Iterable[StoredEvent], store: EventStore | None) -> Iterator[StoredEvent]:
    try:
        yield from rows
    finally:
        if store is not None:
            store.close()


def verify(*, db: Db = None, synchronous: str = "FULL") -> VerifyReport:
    """Walk the hash chain of the whole log; the report names the first break, if any."""
    with opened(db, False, synchronous) as store:
        return audit.verify(store)


def rebuild(*, as_of: int | str | datetime | None = None, progress: Callable[[int, int], None] | None = None,
            db: Db = None, synchronous: str = "FULL") -> dict:
    """Rebuild every projection from scratch (never from a snapshot); returns {"position",
    "projections"}. `progress(position, total)` is called as events are folded."""
    with opened(db, False, synchronous) as store:
        limit = store.as_of(as_of) if as_of is not None else None
        total = limit or store.last_position()
        update = None if progress is None else (lambda position: progress(position, total))
        return projections.rebuild(store, as_of=limit, progress=update)


def migrate(source: str | os.PathLike, target: str):
    """Copy an embedded (SQLite) log into an empty PostgreSQL log at `target` (a postgresql://
    URL), keys and checkpoints with it; both hash chains are verified (eventstore/migration.py)."""
    return migration.migrate(source, target)


# -- the loop: diagnose, observe, run, heal, demo ---------------------------------------------

def diagnose(log: LogContent | None = None, *, text: str | None = None,
             current: ServingConfig | Mapping[str, float | bool] | None = None,
             config_file: str | os.PathLike | None = None, db: Db = None) -> Diagnosis:
    """Explain one vLLM log excerpt with the built-in rules, or, given `db`, with the rule set
    active in that log (promoted there; the built-in rules until one is); the log is only read.

    `log` is a log file as a `pathlib.Path` (read in pieces, so any size), or the log's bytes;
    log text goes through `text=`. A plain str is refused (TypeError): pass Path(name) for a
    file, text=... for text. `current` is the server's config (a ServingConfig, or a mapping of
    some tunables, e.g. {"gpu_memory_utilization": 0.9}); `config_file` its vLLM YAML, whose
    tunables `current` overrides. Raises OSError when the file cannot be read."""
    content = log_content("diagnose", log, text)
    if db is None:
        return observer.diagnose(content, as_config(current, config_file))
    with opened(db, False, "FULL") as store:
        ruleset = rules_lifecycle.active_ruleset(store)
    return ruleset.diagnose(content, as_config(current, config_file))


class Observed(msgspec.Struct):
    """What `observe` recorded: the deployment and its new incidents' ids, in order."""

    deployment: str
    incidents: list[str]


def observe(files: str | os.PathLike | Iterable[str | os.PathLike] = (), *, follow: str | os.PathLike | None = None,
            journal: str | None = None, metrics: str | None = None, interval: float = 15.0,
            quiet_seconds: float = 2.0, deployment: str | None = None, stop: threading.Event | None = None,
            on_incident: Callable[[str], None] | None = None, db: Db = None, config: Config = None,
            synchronous: str = "FULL", clock: Clock = system_clock) -> Observed:
    """Record log files ('-': standard input; one path or a list) as incidents of a
    deployment; or watch one live source (`follow` a file like tail -F, a journald `journal`
    unit, or vLLM's `metrics` URL every `interval` s) until `stop` is set or the source ends.
    Returns the deployment and the incidents' ids; `on_incident(id)` hears of each as it is
    recorded. Every file is read before any is recorded, so a missing one leaves the log
    untouched."""
    files = paths_of(files)
    sources = sum(x is not None for x in (follow, journal, metrics))
    if sources > 1 or (sources and files) or (not sources and not files):
        raise ValueError("observe: give files; or follow=FILE; or journal=UNIT; or metrics=URL")
    settings = load_config(config)
    name = chosen_deployment(settings, deployment)
    wired = deployment_edges.build_one(settings, name)
    with opened(db, True, synchronous, settings) as store:
        if not sources:
            observed = Observed(deployment=name, incidents=loop.observe(store, wired, files, clock=clock))
            for incident_id in observed.incidents if on_incident else ():
                on_incident(incident_id)
            return observed
        stop = stop or threading.Event()
        observed = Observed(deployment=name, incidents=[])

        def record(incident_id: str) -> None:
            observed.incidents.append(incident_id)
            if on_incident is not None:
                on_incident(incident_id)

        if metrics is not None:
            live.watch_metrics(store, wired, metrics, stop, interval_s=interval, clock=clock, on_incident=record)
            return observed
        if follow is not None:
            path = os.fspath(follow)
            lines, source = follow_file(path, stop=stop), IncidentSource(kind="file", path=path)
        else:
            lines, source = journal_lines(journal, stop=stop), IncidentSource(kind="journald", unit=journal)
        live.watch_lines(store, wired, lines, source, stop, quiet_s=quiet_seconds, clock=clock,
                         on_incident=record)
        return observed


def run(*, follow: bool = False, interval: float = 2.0, on_report: Callable[[RunReport], None] | None = None,
        stop: threading.Event | None = None, mode: str | None = None, node: str | None = None, db: Db = None,
        config: Config = None, synchronous: str = "FULL", clock: Clock = system_clock) -> RunReport:
    """Drive the handlers until no work is left: record the lapse of promotions past their
    TTL, handle every pending event, save a projection snapshot (every 1,000 events).

    `follow=True` goes on handling what is recorded meanwhile, every `interval` seconds,
    until `stop` is set (or the process is interrupted), with one runner and one wiring of
    the deployments for the whole watch; `on_report` gets each poll's report. Returns the
    last report. `node`: this fleet member's name, recorded in the runs it starts or refuses
    (default $SELFHEAL_NODE, else the hostname)."""
    settings = load_config(config)
    node = chosen_node(node)
    # on a server log one live runner per node name, or `history --node` would mix two
    with opened(db, True, synchronous, settings) as store, leases.node_claimed(store, node):
        edges = deployment_edges.build(settings)
        driver = loop.runner(store, settings, edges, mode, node)
        while True:
            report = loop.run(store, settings, edges, mode, clock, driver=driver)
            if on_report is not None:
                on_report(report)
            if not follow:
                return report
            if stop is None:
                time.sleep(interval)
            elif stop.wait(interval):
                return report


class Healed(msgspec.Struct):
    """One incident `heal` recorded and every event of its chain, to its outcome."""

    incident_id: str
    events: list[Recorded]


def heal(files: str | os.PathLike | Iterable[str | os.PathLike], *, deployment: str | None = None,
         node: str | None = None, db: Db = None, config: Config = None, synchronous: str = "FULL",
         clock: Clock = system_clock, force: bool = False) -> list[Healed]:
    """Observe log files ('-': standard input) as incidents of a deployment and run the loop
    to its outcome; returns each incident's whole chain. `files`: one path or a list. `node`:
    as for `run`. `force`: each incident raises an intent of its own even where the same
    failure's intent is inside the dedupe window (a retry after an alert; recorded as
    RetryForced; the rate limit still applies)."""
    settings = load_config(config)
    name = chosen_deployment(settings, deployment)
    node = chosen_node(node)
    with opened(db, True, synchronous, settings) as store:
        ids = loop.heal(store, settings, deployment_edges.build(settings), name, paths_of(files), clock=clock,
                        node=node, force=force)
        return [Healed(incident_id=i, events=[typed(row) for row in audit.events(store, correlation=i)])
                for i in ids]


DemoResult = demo_edge.DemoResult
DEFAULT_SCENARIO = demo_edge.DEFAULT_SCENARIO


def demo(scenario: str = DEFAULT_SCENARIO, *, db: str | os.PathLike | None = None, mode: str | None = None,
         node: str | None = None, clock: Clock = system_clock) -> DemoResult:
    """One whole incident of a bundled scenario (or a scenario file) on the simulator, in a
    fresh log at `db` (default: a new temp folder; an existing log is refused). `mode`:
    default $SELFHEAL_MODE, else dev; `node`: as for `run`. Read the log after with
    `events(db=result.db)`."""
    return demo_edge.demo(scenario, db, mode=mode or Settings().effective_mode(), node=chosen_node(node),
                          clock=clock)


def scenarios() -> dict[str, str]:
    """The bundled demo scenarios: name -> description (`selfheal demo --list`)."""
    return {name: load_scenario(name).description for name in bundled_scenarios()}
