"""The API's functions that review and govern what the loop did: queries as of any moment,
baselines and escrow, alerts, the supervisor, rule sets, verdicts, replay and export.
Conventions as in selfheal/api.py."""
from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path


from selfheal.edges import deployments as deployment_edges
from selfheal.edges import supervise as supervise_edge
from selfheal.eventstore.recorder import parse_utc, system_clock, utc_iso
from selfheal.handlers import escrow, loop, rules_lifecycle
from selfheal.handlers import replay as replaying
from selfheal.handlers.observer import Diagnosis
from selfheal.projections import queries
from selfheal.schemas.events import (
    BaselineImported, IncidentForgotten, PromotionApproved, PromotionRejected, RuleSetActivated, RuleSetApproved, RuleSetProposed, RuleSetShadowed, VerdictRecorded,
)

from selfheal.conventions import Clock, Config, Db, LogContent, chosen_deployment, load_config, log_content, opened


# -- queries ------------------------------------------------------------------------------------

def history(*, deployment: str | None = None, node: str | None = None, as_of: int | str | datetime | None = None,
            db: Db = None, synchronous: str = "FULL") -> list:
    """Every run (refused, promoted, escalated), oldest first; `node`: only the runs that fleet
    node started or refused."""
    with opened(db, False, synchronous) as store:
        return queries.history(store, as_of=as_of, deployment=deployment, node=node)


def state(*, at: str | datetime | None = None, as_of: int | str | datetime | None = None, node: str | None = None,
          db: Db = None, config: Config = None, synchronous: str = "FULL",
          clock: Clock = system_clock) -> list[queries.DeploymentState]:
    """Rate-limit state per deployment; `at` (default: the clock's now) decides which runs are
    inside the window. `node`: only the deployments with runs that fleet node recorded (each
    budget stays the whole fleet's)."""
    limits = load_config(config).rate_limit
    now = parse_utc(at) if isinstance(at, str) else (at or clock())
    with opened(db, False, synchronous) as store:
        return queries.state(store, limits, now, as_of=as_of, node=node)


def promotions(*, all: bool = False, as_of: int | str | datetime | None = None, db: Db = None,
               synchronous: str = "FULL") -> list:
    """Promotions waiting for a commit or an approval (`all`: settled ones too)."""
    with opened(db, False, synchronous) as store:
        return queries.promotions(store, as_of=as_of, waiting_only=not all)


def intents(*, status: str | None = None, as_of: int | str | datetime | None = None, db: Db = None,
            synchronous: str = "FULL") -> list:
    """Intents and how each ended (`status`: "open" or "archived")."""
    with opened(db, False, synchronous) as store:
        return queries.intents(store, as_of=as_of, status=status)


def show(run_id: str, *, as_of: int | str | datetime | None = None, db: Db = None,
         synchronous: str = "FULL") -> queries.RunChain:
    """The causal chain of a run (a prefix of its id will do), from incident to outcome."""
    with opened(db, False, synchronous) as store:
        return queries.show(store, run_id, as_of=as_of)


# -- baselines, escrow, alerts, supervise -------------------------------------------------------

def baseline(deployment: str | None = None, *, as_of: int | str | datetime | None = None, db: Db = None,
             synchronous: str = "FULL") -> dict[str, list]:
    """Each deployment's baseline versions, oldest first (the last is the current one)."""
    with opened(db, False, synchronous) as store:
        return queries.baseline(store, as_of=as_of, deployment=deployment)


def baseline_import(deployment: str, *, file: str | os.PathLike | None = None, db: Db = None, config: Config = None,
                    synchronous: str = "FULL", clock: Clock = system_clock) -> BaselineImported:
    """Record the vLLM YAML a deployment runs now (`file`, default its config_file) as its
    baseline version 1."""
    settings = load_config(config)
    wired = deployment_edges.build_one(settings, chosen_deployment(settings, deployment))
    with opened(db, True, synchronous, settings) as store:
        return loop.import_baseline(store, wired, None if file is None else os.fspath(file), clock=clock)


def approve(promotion_id: str, *, by: str, note: str = "", db: Db = None, config: Config = None,
            synchronous: str = "FULL", clock: Clock = system_clock) -> PromotionApproved:
    """Approve a waiting promotion (prod mode); the commit follows on the next `run`."""
    settings = load_config(config)
    with opened(db, False, synchronous, settings) as store:
        return escrow.approve(store, settings, promotion_id, by, clock(), note)


def reject(promotion_id: str, *, by: str, note: str = "", db: Db = None, synchronous: str = "FULL",
           clock: Clock = system_clock) -> PromotionRejected:
    """Reject a waiting promotion: nothing will be written."""
    with opened(db, False, synchronous) as store:
        return escrow.reject(store, promotion_id, by, clock(), note)


def alerts(*, deployment: str | None = None, as_of: int | str | datetime | None = None, db: Db = None,
           synchronous: str = "FULL") -> list:
    """Every alert raised, with its evidence and where it was delivered."""
    with opened(db, False, synchronous) as store:
        return queries.alerts(store, as_of=as_of, deployment=deployment)


def supervise(deployment: str | None = None, *, pidfile: str | os.PathLike | None = None,
              report: Callable[[str], None] | None = None, stop: threading.Event | None = None,
              config: Config = None) -> int:
    """Run the deployment's vLLM from its baseline YAML until SIGTERM/SIGINT (or `stop`);
    SIGHUP restarts it. `report(line)` hears what happens ("NAME: started pid ..."). Must run in the main thread."""
    settings = load_config(config)
    name = chosen_deployment(settings, deployment)
    say = (lambda line: report(f"{name}: {line}")) if report else (lambda line: None)
    return supervise_edge.supervise(settings.deployment(name), report=say, stop=stop,
                                    pidfile=None if pidfile is None else os.fspath(pidfile))


# -- rules, verdicts, replay, export ------------------------------------------------------------

RulesListing = rules_lifecycle.RulesListing


def rules_list(*, as_of: int | str | datetime | None = None, db: Db = None,
               synchronous: str = "FULL") -> RulesListing:
    """The active version of every rule, and the history of rule sets."""
    with opened(db, True, synchronous) as store:
        return rules_lifecycle.listing(store, None if as_of is None else store.as_of(as_of))


def rules_test(rules_file: str | os.PathLike, log: LogContent | None = None, *, text: str | None = None) -> Diagnosis:
    """What the rules in `rules_file` find in a log (no log store is touched). The log is
    given as in `diagnose`: a pathlib.Path, bytes, or text=...; a plain str is refused."""
    return rules_lifecycle.try_rules(rules_file, log_content("rules_test", log, text))


def rules_propose(rules_file: str | os.PathLike, *, db: Db = None, synchronous: str = "FULL",
                  clock: Clock = system_clock) -> RuleSetProposed:
    """Record a rules file as a candidate rule set (refused with file, rule, line if broken)."""
    with opened(db, True, synchronous) as store:
        return rules_lifecycle.propose(store, os.fspath(rules_file), clock())


def rules_shadow(candidate: str, *, db: Db = None, config: Config = None, synchronous: str = "FULL",
                 clock: Clock = system_clock) -> RuleSetShadowed:
    """Every captured incident through the candidate and the active rules; record the report."""
    buffer = load_config(config).observer.safety_buffer
    with opened(db, False, synchronous) as store:
        return rules_lifecycle.shadow(store, candidate, clock(), buffer)


def rules_approve(candidate: str, *, by: str, note: str = "", db: Db = None, synchronous: str = "FULL",
                  clock: Clock = system_clock) -> RuleSetApproved:
    """Approve the candidate's latest shadow report (needed to promote in prod mode)."""
    with opened(db, False, synchronous) as store:
        return rules_lifecycle.approve(store, candidate, by, clock(), note)


def rules_promote(candidate: str, *, by: str, db: Db = None, config: Config = None, synchronous: str = "FULL",
                  clock: Clock = system_clock) -> RuleSetActivated:
    """Make the candidate the active rule set (needs a shadow report; in prod, its approval)."""
    settings = load_config(config)
    with opened(db, False, synchronous, settings) as store:
        return rules_lifecycle.promote(store, settings, candidate, by, clock())


def verdict(incident_id: str, *, kind: str, by: str, note: str = "", db: Db = None, synchronous: str = "FULL",
            clock: Clock = system_clock) -> VerdictRecorded:
    """Record a person's judgement of an incident (a finding kind, or "none")."""
    with opened(db, False, synchronous) as store:
        return rules_lifecycle.verdict(store, incident_id, kind, by, clock(), note)


def forget(incident_id: str, *, by: str, reason: str = "", db: Db = None, synchronous: str = "FULL",
           clock: Clock = system_clock) -> IncidentForgotten:
    """Make an incident's text unreadable for good: destroy the key its text is sealed with
    and record who did it and why (crypto-shredding; the chain and `verify` are unchanged).
    Forgetting a forgotten incident returns the first record and changes nothing."""
    with opened(db, False, synchronous) as store:
        incident = replaying.find_incident(store, incident_id)
        done = [r.event for r in store.read_stream(f"incident-{incident.event.incident_id}")
                if isinstance(r.event, IncidentForgotten)]
        if not done:
            store.forget(incident, by, clock(), reason)
            done = [r.event for r in store.read_stream(f"incident-{incident.event.incident_id}")
                    if isinstance(r.event, IncidentForgotten)]
        return done[0]


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
        log = contextlib.closing(source)
    else:
        settings, log = load_config(config), opened(db, False, synchronous)
    with log as store:
        settings = replaying.apply_overrides(settings, overrides, mode)
        ruleset = rules_lifecycle.candidate_rules(store, rules) if rules else None
        return replaying.replay(store, settings, deployment_edges.build(settings), since=since, until=until,
                                ruleset=ruleset, mode=mode)


def export(incident_id: str, *, output: str | os.PathLike | None = None, db: Db = None, config: Config = None,
           synchronous: str = "FULL") -> list[str]:
    """An incident, its whole chain, its deployment's baseline and settings as a portable
    bundle: JSON Lines (the first line the header). Written to `output` too, when given."""
    settings = load_config(config)
    with opened(db, False, synchronous, settings) as store:
        lines = replaying.export_bundle(store, settings, incident_id)
    if output is not None:
        Path(output).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return lines
