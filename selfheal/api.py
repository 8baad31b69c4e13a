"""selfheal's Python API: one function per CLI command, of the same name.

The library is the product and `selfheal` the command line is a thin shell over it: each
command parses its arguments, calls the function of its name here and prints the result.
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

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path

import msgspec

from selfheal import projections
from selfheal.edges import deployments as deployment_edges
from selfheal.edges import demo as demo_edge
from selfheal.edges import live
from selfheal.edges import supervise as supervise_edge
from selfheal.edges.follow import follow as follow_file
from selfheal.edges.journal import journal as journal_lines
from selfheal.edges.sim import bundled_scenarios, load_scenario
from selfheal.eventstore import audit
from selfheal.eventstore.audit import default_db_path
from selfheal.eventstore.errors import StoreError
from selfheal.eventstore.recorder import StoredEvent, VerifyReport, parse_utc, system_clock, utc_iso
from selfheal.eventstore.store import EventStore, Recorded, open_store, typed
from selfheal.handlers import escrow, loop, rules_lifecycle
from selfheal.handlers.loop import InputError
from selfheal.handlers import replay as replaying
from selfheal.handlers.observer import Diagnosis, builtin_ruleset
from selfheal.handlers.runtime import RunReport
from selfheal.projections import queries
from selfheal.schemas.config import ConfigError, Settings, load_settings
from selfheal.schemas.events import (
    BaselineImported, IncidentSource, PromotionApproved, PromotionRejected, RuleSetActivated, RuleSetApproved,
    RuleSetProposed, RuleSetShadowed, VerdictRecorded,
)
from selfheal.schemas.serving import TUNABLE, ServingConfig
from selfheal.schemas.vllm_yaml import read_serving_values

CONFIG_ENV = "SELFHEAL_CONFIG"

Db = str | os.PathLike | EventStore | None
Config = str | os.PathLike | Settings | None
Clock = Callable[[], datetime]
LogContent = os.PathLike | bytes | bytearray | memoryview


# -- the log and the config -------------------------------------------------------------------

def open_db(db: Db = None, *, create: bool = False, synchronous: str = "FULL") -> EventStore:
    """The event log `db` names, opened (a store is returned as it is); close it when done."""
    if isinstance(db, EventStore):
        return db
    return open_store(default_db_path() if db is None else Path(db), create=create, synchronous=synchronous)


@contextlib.contextmanager
def _opened(db: Db, create: bool, synchronous: str) -> Iterator[EventStore]:
    if isinstance(db, EventStore):
        yield db
        return
    with open_db(db, create=create, synchronous=synchronous) as store:
        yield store


def load_config(config: Config = None) -> Settings:
    """The settings `config` names: a Settings as it is, a selfheal.toml path, or the default
    ($SELFHEAL_CONFIG, else ./selfheal.toml if present, else the built-in defaults)."""
    if isinstance(config, Settings):
        return config
    path = config if config is not None else os.environ.get(CONFIG_ENV)
    if path is None and Path("selfheal.toml").is_file():
        path = "selfheal.toml"
    return load_settings(path)


def _deployment(settings: Settings, name: str | None):
    """The deployments' edges and the one `name` chooses (the only one, when None)."""
    if not settings.deployments:
        raise ConfigError("no deployments are configured: add a [deployments.NAME] table to selfheal.toml "
                          "(see README), or try `selfheal demo`")
    if name is None:
        if len(settings.deployments) > 1:
            raise ConfigError(f"several deployments are configured ({', '.join(sorted(settings.deployments))}): "
                              "choose one with --deployment")
        name = next(iter(settings.deployments))
    settings.deployment(name)
    return deployment_edges.build(settings), name


def _log_content(function: str, log, text: str | None):
    """A log given to `function`: a file (os.PathLike), bytes, or text= (never a bare str)."""
    if isinstance(log, str):
        shown = repr(log) if len(log) <= 40 else f"{log[:40]!r}..."
        raise TypeError(f"{function}(): a str is ambiguous (a file name, or log text?): pass a log file as "
                        f"pathlib.Path({shown}) or the log's text as text=...")
    if (log is None) == (text is None):
        raise TypeError(f"{function}(): give the log as a path or bytes, or as text=..., and only one of them")
    if text is not None:
        if not isinstance(text, str):
            raise TypeError(f"{function}(): text= takes a str, not {type(text).__name__}")
        return text
    if not isinstance(log, (os.PathLike, bytes, bytearray, memoryview)):
        raise TypeError(f"{function}(): the log is a pathlib.Path, bytes or text=..., not {type(log).__name__}")
    return log


def _paths(files: str | os.PathLike | Iterable[str | os.PathLike]) -> list[str]:
    """Files as paths: one path (a str is a path here), or a list of them."""
    return [os.fspath(files)] if isinstance(files, (str, os.PathLike)) else [os.fspath(f) for f in files]


def _as_config(current: ServingConfig | Mapping[str, float | bool] | None,
               config_file: str | os.PathLike | None) -> ServingConfig | None:
    if isinstance(current, ServingConfig):
        return current
    values = read_serving_values(config_file) if config_file else {}
    for key, value in (current or {}).items():
        if key not in TUNABLE:
            raise ValueError(f"current: {key!r} is not one of {', '.join(TUNABLE)}")
        values[key] = value
    if not values:
        return None
    ints = {"max_model_len", "max_num_seqs", "max_num_batched_tokens"}
    return ServingConfig(**{k: int(v) if k in ints else v for k, v in values.items()})


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
    with _opened(db, False, synchronous) as store:
        return audit.verify(store)


def rebuild(*, as_of: int | str | datetime | None = None, progress: Callable[[int, int], None] | None = None,
            db: Db = None, synchronous: str = "FULL") -> dict:
    """Rebuild every projection from scratch (never from a snapshot); returns {"position",
    "projections"}. `progress(position, total)` is called as events are folded."""
    with _opened(db, False, synchronous) as store:
        limit = store.as_of(as_of) if as_of is not None else None
        total = limit or store.last_position()
        update = None if progress is None else (lambda position: progress(position, total))
        return projections.rebuild(store, as_of=limit, progress=update)


# -- the loop: diagnose, observe, run, heal, demo ---------------------------------------------

def diagnose(log: LogContent | None = None, *, text: str | None = None,
             current: ServingConfig | Mapping[str, float | bool] | None = None,
             config_file: str | os.PathLike | None = None) -> Diagnosis:
    """Explain one vLLM log excerpt with the built-in rules; no log store is touched.

    `log` is a log file as a `pathlib.Path` (read in pieces, so any size), or the log's bytes;
    log text goes through `text=`. A plain str is refused (TypeError): pass Path(name) for a
    file, text=... for text. `current` is the server's config (a ServingConfig, or a mapping of
    some tunables, e.g. {"gpu_memory_utilization": 0.9}); `config_file` its vLLM YAML, whose
    tunables `current` overrides. Raises OSError when the file cannot be read."""
    content = _log_content("diagnose", log, text)
    return builtin_ruleset().diagnose(content, _as_config(current, config_file))


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
    files = _paths(files)
    sources = sum(x is not None for x in (follow, journal, metrics))
    if sources > 1 or (sources and files) or (not sources and not files):
        raise ValueError("observe: give files; or follow=FILE; or journal=UNIT; or metrics=URL")
    edges, name = _deployment(load_config(config), deployment)
    with _opened(db, True, synchronous) as store:
        if not sources:
            observed = Observed(deployment=name, incidents=loop.observe(store, edges[name], files, clock=clock))
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
            live.watch_metrics(store, edges[name], metrics, stop, interval_s=interval, clock=clock, on_incident=record)
            return observed
        if follow is not None:
            path = os.fspath(follow)
            lines, source = follow_file(path, stop=stop), IncidentSource(kind="file", path=path)
        else:
            lines, source = journal_lines(journal, stop=stop), IncidentSource(kind="journald", unit=journal)
        live.watch_lines(store, edges[name], lines, source, stop, quiet_s=quiet_seconds, clock=clock,
                         on_incident=record)
        return observed


def run(*, follow: bool = False, interval: float = 2.0, on_report: Callable[[RunReport], None] | None = None,
        stop: threading.Event | None = None, mode: str | None = None, db: Db = None, config: Config = None,
        synchronous: str = "FULL", clock: Clock = system_clock) -> RunReport:
    """Drive the handlers until no work is left: record the lapse of promotions past their
    TTL, handle every pending event, save a projection snapshot (every 1,000 events).

    `follow=True` goes on handling what is recorded meanwhile, every `interval` seconds,
    until `stop` is set (or the process is interrupted), with one runner and one wiring of
    the deployments for the whole watch; `on_report` gets each poll's report. Returns the
    last report."""
    settings = load_config(config)
    with _opened(db, True, synchronous) as store:
        edges = deployment_edges.build(settings)
        driver = loop.runner(store, settings, edges, mode)
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


def heal(files: str | os.PathLike | Iterable[str | os.PathLike], *, deployment: str | None = None, db: Db = None,
         config: Config = None, synchronous: str = "FULL", clock: Clock = system_clock) -> list[Healed]:
    """Observe log files ('-': standard input) as incidents of a deployment and run the loop
    to its outcome; returns each incident's whole chain. `files`: one path or a list."""
    settings = load_config(config)
    edges, name = _deployment(settings, deployment)
    with _opened(db, True, synchronous) as store:
        ids = loop.heal(store, settings, edges, name, _paths(files), clock=clock)
        return [Healed(incident_id=i, events=[typed(row) for row in audit.events(store, correlation=i)])
                for i in ids]


DemoResult = demo_edge.DemoResult
DEFAULT_SCENARIO = demo_edge.DEFAULT_SCENARIO


def demo(scenario: str = DEFAULT_SCENARIO, *, db: str | os.PathLike | None = None, mode: str | None = None,
         clock: Clock = system_clock) -> DemoResult:
    """One whole incident of a bundled scenario (or a scenario file) on the simulator, in a
    fresh log at `db` (default: a new temp folder; an existing log is refused). `mode`:
    default $SELFHEAL_MODE, else dev. Read the log after with `events(db=result.db)`."""
    return demo_edge.demo(scenario, db, mode=mode or os.environ.get("SELFHEAL_MODE") or "dev", clock=clock)


def scenarios() -> dict[str, str]:
    """The bundled demo scenarios: name -> description (`selfheal demo --list`)."""
    return {name: load_scenario(name).description for name in bundled_scenarios()}


# -- queries ------------------------------------------------------------------------------------

def history(*, deployment: str | None = None, as_of: int | str | datetime | None = None, db: Db = None,
            synchronous: str = "FULL") -> list:
    """Every run (refused, promoted, escalated), oldest first."""
    with _opened(db, False, synchronous) as store:
        return queries.history(store, as_of=as_of, deployment=deployment)


def state(*, at: str | datetime | None = None, as_of: int | str | datetime | None = None, db: Db = None,
          config: Config = None, synchronous: str = "FULL") -> list[queries.DeploymentState]:
    """Rate-limit state per deployment; `at` (default: now) decides which runs are inside
    the window."""
    limits = load_config(config).rate_limit
    now = parse_utc(at) if isinstance(at, str) else (at or system_clock())
    with _opened(db, False, synchronous) as store:
        return queries.state(store, limits, now, as_of=as_of)


def promotions(*, all: bool = False, as_of: int | str | datetime | None = None, db: Db = None,
               synchronous: str = "FULL") -> list:
    """Promotions waiting for a commit or an approval (`all`: settled ones too)."""
    with _opened(db, False, synchronous) as store:
        return queries.promotions(store, as_of=as_of, waiting_only=not all)


def intents(*, status: str | None = None, as_of: int | str | datetime | None = None, db: Db = None,
            synchronous: str = "FULL") -> list:
    """Intents and how each ended (`status`: "open" or "archived")."""
    with _opened(db, False, synchronous) as store:
        return queries.intents(store, as_of=as_of, status=status)


def show(run_id: str, *, as_of: int | str | datetime | None = None, db: Db = None,
         synchronous: str = "FULL") -> queries.RunChain:
    """The causal chain of a run (a prefix of its id will do), from incident to outcome."""
    with _opened(db, False, synchronous) as store:
        return queries.show(store, run_id, as_of=as_of)


# -- baselines, escrow, alerts, supervise -------------------------------------------------------

def baseline(deployment: str | None = None, *, as_of: int | str | datetime | None = None, db: Db = None,
             synchronous: str = "FULL") -> dict[str, list]:
    """Each deployment's baseline versions, oldest first (the last is the current one)."""
    with _opened(db, False, synchronous) as store:
        return queries.baseline(store, as_of=as_of, deployment=deployment)


def baseline_import(deployment: str, *, file: str | os.PathLike | None = None, db: Db = None, config: Config = None,
                    synchronous: str = "FULL", clock: Clock = system_clock) -> BaselineImported:
    """Record the vLLM YAML a deployment runs now (`file`, default its config_file) as its
    baseline version 1."""
    edges, name = _deployment(load_config(config), deployment)
    with _opened(db, True, synchronous) as store:
        return loop.import_baseline(store, edges[name], None if file is None else os.fspath(file), clock=clock)


def approve(promotion_id: str, *, by: str, note: str = "", db: Db = None, config: Config = None,
            synchronous: str = "FULL", clock: Clock = system_clock) -> PromotionApproved:
    """Approve a waiting promotion (prod mode); the commit follows on the next `run`."""
    settings = load_config(config)
    with _opened(db, False, synchronous) as store:
        return escrow.approve(store, settings, promotion_id, by, clock(), note)


def reject(promotion_id: str, *, by: str, note: str = "", db: Db = None, synchronous: str = "FULL",
           clock: Clock = system_clock) -> PromotionRejected:
    """Reject a waiting promotion: nothing will be written."""
    with _opened(db, False, synchronous) as store:
        return escrow.reject(store, promotion_id, by, clock(), note)


def alerts(*, deployment: str | None = None, as_of: int | str | datetime | None = None, db: Db = None,
           synchronous: str = "FULL") -> list:
    """Every alert raised, with its evidence and where it was delivered."""
    with _opened(db, False, synchronous) as store:
        return queries.alerts(store, as_of=as_of, deployment=deployment)


def supervise(deployment: str | None = None, *, pidfile: str | os.PathLike | None = None,
              report: Callable[[str], None] | None = None, stop: threading.Event | None = None,
              config: Config = None) -> int:
    """Run the deployment's vLLM from its baseline YAML until SIGTERM/SIGINT (or `stop`);
    SIGHUP restarts it. `report(line)` hears what happens ("NAME: started pid ..."). Must run in the main thread."""
    edges, name = _deployment(load_config(config), deployment)
    say = (lambda line: report(f"{name}: {line}")) if report else (lambda line: None)
    return supervise_edge.supervise(edges[name].settings, report=say, stop=stop,
                                    pidfile=None if pidfile is None else os.fspath(pidfile))


# -- rules, verdicts, replay, export ------------------------------------------------------------

RulesListing = rules_lifecycle.RulesListing


def rules_list(*, as_of: int | str | datetime | None = None, db: Db = None,
               synchronous: str = "FULL") -> RulesListing:
    """The active version of every rule, and the history of rule sets."""
    with _opened(db, True, synchronous) as store:
        return rules_lifecycle.listing(store, None if as_of is None else store.as_of(as_of))


def rules_test(rules_file: str | os.PathLike, log: LogContent | None = None, *, text: str | None = None) -> Diagnosis:
    """What the rules in `rules_file` find in a log (no log store is touched). The log is
    given as in `diagnose`: a pathlib.Path, bytes, or text=...; a plain str is refused."""
    return rules_lifecycle.try_rules(rules_file, _log_content("rules_test", log, text))


def rules_propose(rules_file: str | os.PathLike, *, db: Db = None, synchronous: str = "FULL",
                  clock: Clock = system_clock) -> RuleSetProposed:
    """Record a rules file as a candidate rule set (refused with file, rule, line if broken)."""
    with _opened(db, True, synchronous) as store:
        return rules_lifecycle.propose(store, os.fspath(rules_file), clock())


def rules_shadow(candidate: str, *, db: Db = None, config: Config = None, synchronous: str = "FULL",
                 clock: Clock = system_clock) -> RuleSetShadowed:
    """Every captured incident through the candidate and the active rules; record the report."""
    buffer = load_config(config).observer.safety_buffer
    with _opened(db, False, synchronous) as store:
        return rules_lifecycle.shadow(store, candidate, clock(), buffer)


def rules_approve(candidate: str, *, by: str, note: str = "", db: Db = None, synchronous: str = "FULL",
                  clock: Clock = system_clock) -> RuleSetApproved:
    """Approve the candidate's latest shadow report (needed to promote in prod mode)."""
    with _opened(db, False, synchronous) as store:
        return rules_lifecycle.approve(store, candidate, by, clock(), note)


def rules_promote(candidate: str, *, by: str, db: Db = None, config: Config = None, synchronous: str = "FULL",
                  clock: Clock = system_clock) -> RuleSetActivated:
    """Make the candidate the active rule set (needs a shadow report; in prod, its approval)."""
    settings = load_config(config)
    with _opened(db, False, synchronous) as store:
        return rules_lifecycle.promote(store, settings, candidate, by, clock())


def verdict(incident_id: str, *, kind: str, by: str, note: str = "", db: Db = None, synchronous: str = "FULL",
            clock: Clock = system_clock) -> VerdictRecorded:
    """Record a person's judgement of an incident (a finding kind, or "none")."""
    with _opened(db, False, synchronous) as store:
        return rules_lifecycle.verdict(store, incident_id, kind, by, clock(), note)


def replay(*, since: str | datetime | None = None, until: str | datetime | None = None, rules: str | None = None,
           overrides: Iterable[str] = (), mode: str | None = None, bundle: str | os.PathLike | None = None,
           db: Db = None, config: Config = None, synchronous: str = "FULL") -> replaying.ReplayReport:
    """Replay captured incidents through the loop in a scratch store and report what differs.

    `rules`: a proposed rule set (id prefix) instead of the active rules; `overrides`: what-if
    settings ("rate_limit.runs=5"); `bundle`: an exported bundle's file instead of the log."""
    since = None if since is None else utc_iso(parse_utc(since) if isinstance(since, str) else since)
    until = None if until is None else utc_iso(parse_utc(until) if isinstance(until, str) else until)
    if bundle is not None:
        settings, source = replaying.import_bundle(Path(bundle).read_text(encoding="utf-8").splitlines(),
                                                   os.fspath(bundle))
        opened = contextlib.closing(source)
    else:
        settings, opened = load_config(config), _opened(db, False, synchronous)
    with opened as store:
        settings = replaying.apply_overrides(settings, overrides, mode)
        ruleset = rules_lifecycle.candidate_rules(store, rules) if rules else None
        return replaying.replay(store, settings, deployment_edges.build(settings), since=since, until=until,
                                ruleset=ruleset, mode=mode)


def export(incident_id: str, *, output: str | os.PathLike | None = None, db: Db = None, config: Config = None,
           synchronous: str = "FULL") -> list[str]:
    """An incident, its whole chain, its deployment's baseline and settings as a portable
    bundle: JSON Lines (the first line the header). Written to `output` too, when given."""
    settings = load_config(config)
    with _opened(db, False, synchronous) as store:
        lines = replaying.export_bundle(store, settings, incident_id)
    if output is not None:
        Path(output).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return lines


#: the functions named after the CLI's commands, in the order of `selfheal --help`'s groups
COMMANDS = ["init", "events", "verify", "rebuild", "diagnose", "observe", "run", "heal", "demo", "history", "state",
            "promotions", "intents", "show", "baseline", "baseline_import", "approve", "reject", "alerts",
            "supervise", "rules_list", "rules_test", "rules_propose", "rules_shadow", "rules_approve",
            "rules_promote", "verdict", "replay", "export"]

__all__ = [*COMMANDS, "open_db", "load_config", "scenarios", "typed", "Observed", "Healed", "DemoResult", "RulesListing",
           "DEFAULT_SCENARIO", "ConfigError", "InputError", "StoreError"]
