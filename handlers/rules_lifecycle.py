"""Rule evolution: verdicts, proposing a rule set, shadow evaluation, approval, promotion.

Commands at the edge (a person, or a tool, acts); everything they learn is recorded, and
the observer handler picks the active rule set up from the log.
"""
from __future__ import annotations

import hashlib
import os
from datetime import datetime
from pathlib import Path

import msgspec

from selfheal.eventstore import sealing
from selfheal.eventstore.store import EventStore, Pending, new_id
from selfheal.handlers.observe import load_ruleset
from selfheal.handlers.observer import Diagnosis, RuleSet
from selfheal.handlers.replay import find_incident
from selfheal.projections import view_as_of
from selfheal.projections.rulesets import RuleSetSummary
from selfheal.schemas.config import Settings
from selfheal.schemas.events import (
    RuleSetActivated, RuleSetApproved, RuleSetProposed, RuleSetShadowed, VerdictRecorded,
)
from selfheal.schemas.failures import FINDING_KINDS

#: what a verdict may say an incident was: a failure kind a rule can name, or none at all
KINDS_OR_NONE = ("none", *FINDING_KINDS)


class RulesError(ValueError):
    pass


def _append(store: EventStore, stream: str, event, now: datetime) -> None:
    store.append(stream, [Pending(event=event, event_id=new_id(), occurred_at=now)])


def verdict(store: EventStore, incident_id: str, kind: str, by: str, now: datetime, note: str = "") -> VerdictRecorded:
    if kind not in KINDS_OR_NONE:
        raise RulesError(f"--kind {kind!r}: allowed: {', '.join(KINDS_OR_NONE)}")
    if not by.strip():
        raise RulesError("--by: say who judges")
    try:
        found = find_incident(store, incident_id)
    except LookupError as exc:
        raise RulesError(str(exc)) from None
    recorded = VerdictRecorded(incident_id=found.event.incident_id, kind=kind, by=by, note=note)
    _append(store, f"incident-{recorded.incident_id}", recorded, now)
    return recorded


def propose(store: EventStore, path: str, now: datetime) -> RuleSetProposed:
    text = Path(path).read_text(encoding="utf-8")
    ruleset = load_ruleset(text, path)  # refuses a broken file with file, rule, line and problem
    proposed = RuleSetProposed(ruleset_id=ruleset.digest, version=ruleset.version, source=str(path), text=text)
    if ruleset.digest not in view_as_of(store)["rulesets"].by_id:
        _append(store, f"ruleset-{ruleset.digest}", proposed, now)
    return proposed


def _candidate(store: EventStore, candidate: str):
    view = view_as_of(store)
    found = [s for rid, s in view["rulesets"].by_id.items() if rid == candidate or rid.startswith(candidate)
             or rid.removeprefix("sha256:").startswith(candidate)]
    if len(found) != 1:
        raise RulesError(f"rule set {candidate!r}: " + ("not proposed" if not found else "ambiguous"))
    return view, found[0]


def find_candidate(store: EventStore, candidate: str) -> RuleSetSummary:
    """The one proposed rule set whose id (with or without `sha256:`) starts with `candidate`."""
    return _candidate(store, candidate)[1]


def candidate_rules(store: EventStore, candidate: str) -> RuleSet:
    """The proposed rule set `candidate` names, compiled (for `replay --rules`)."""
    summary = find_candidate(store, candidate)
    return load_ruleset(summary.text, summary.source)


class RuleInfo(msgspec.Struct):
    id: str
    version: int
    kind: str


class ActiveRules(msgspec.Struct):
    ruleset_id: str
    version: str
    rules: list[RuleInfo]


class RuleSetInfo(msgspec.Struct):
    ruleset_id: str
    version: str
    source: str
    proposed_at: datetime
    reports: list[dict]
    approvals: list[dict]
    activated_at: datetime | None
    #: "active", "activated before" or "proposed"
    state: str


class RulesListing(msgspec.Struct):
    active: ActiveRules
    history: list[RuleSetInfo]


def listing(store: EventStore, as_of: int | None = None) -> RulesListing:
    """The active version of every rule (the built-in ones until a rule set is promoted), and
    every proposed rule set, as of a position (default: now)."""
    sets = view_as_of(store, as_of)["rulesets"]
    active = sets.active
    ruleset = load_ruleset(active.text if active else None)
    history = [RuleSetInfo(ruleset_id=s.ruleset_id, version=s.version, source=s.source, proposed_at=s.proposed_at,
                           reports=s.reports, approvals=s.approvals, activated_at=s.activated_at,
                           state="active" if active and s.ruleset_id == active.ruleset_id else (
                               "activated before" if s.activated_at else "proposed"))
               for s in sets.by_id.values()]
    return RulesListing(
        active=ActiveRules(ruleset_id=active.ruleset_id if active else "builtin", version=ruleset.version,
                           rules=[RuleInfo(id=r.id, version=r.version, kind=r.kind) for r in ruleset.rules]),
        history=history)


def active_ruleset(store: EventStore) -> RuleSet:
    """The rule set the log's observer reads with now: the promoted one, else the built-in."""
    active = view_as_of(store, None)["rulesets"].active
    return load_ruleset(active.text if active else None)


def try_rules(rules_file: str | os.PathLike, log: str | bytes | os.PathLike, safety_buffer: float = 0.10) -> Diagnosis:
    """What the rules in `rules_file` find in `log` (text, bytes, or a log file's path); no
    store is touched. A broken rules file is refused with file, rule, line and problem."""
    ruleset = load_ruleset(Path(rules_file).read_text(encoding="utf-8"), os.fspath(rules_file))
    return ruleset.diagnose(log, safety_buffer=safety_buffer)


def _primary(diagnosis) -> tuple[str, str, str]:
    p = diagnosis.primary
    if p is None:
        return ("none", "", "")
    return (p.kind, f"{p.rule} v{p.rule_version}", msgspec.json.encode(dict(sorted(p.fix.items()))).decode())


def shadow(store: EventStore, candidate: str, now: datetime, safety_buffer: float = 0.10) -> RuleSetShadowed:
    """Every captured incident through the candidate and the active rules; compare; record."""
    view, summary = _candidate(store, candidate)
    active = view["rulesets"].active
    theirs = load_ruleset(summary.text, summary.source)
    ours = load_ruleset(active.text if active else None)
    verdicts = view["rulesets"].verdicts
    agreements, disagreements = 0, []
    true_pos = predicted_pos = actual_pos = labelled = 0
    incidents = 0
    for r in store.read(types=["IncidentCaptured"]):
        if sealing.forgotten(r.event):
            continue  # no text left to compare the two rule sets on
        incidents += 1
        incident = r.event
        a, b = ours.diagnose(incident.raw_text, safety_buffer=safety_buffer), \
            theirs.diagnose(incident.raw_text, safety_buffer=safety_buffer)
        pa, pb = _primary(a), _primary(b)
        if pa == pb:
            agreements += 1
        else:
            # the lines each side's primary finding rests on: where the two readings part
            lines = list(dict.fromkeys((a.primary.evidence if a.primary else []) +
                                       (b.primary.evidence if b.primary else [])))
            disagreements.append({"incident_id": incident.incident_id, "active": " ".join(pa).strip(),
                                  "candidate": " ".join(pb).strip(), "lines": "\n".join(lines)[:2000]})
        label = verdicts.get(incident.incident_id)
        if label is not None:
            labelled += 1
            predicted = pb[0]
            predicted_pos += predicted != "none"
            actual_pos += label != "none"
            true_pos += predicted != "none" and predicted == label
    body = msgspec.json.encode([summary.ruleset_id, active.ruleset_id if active else "builtin", incidents,
                                agreements, disagreements])
    report = RuleSetShadowed(
        ruleset_id=summary.ruleset_id, against=active.ruleset_id if active else ours.version,
        report_hash="sha256:" + hashlib.sha256(body).hexdigest(), incidents=incidents, agreements=agreements,
        disagreements=disagreements, labelled=labelled,
        precision=round(true_pos / predicted_pos, 4) if predicted_pos else None,
        recall=round(true_pos / actual_pos, 4) if actual_pos else None)
    _append(store, f"ruleset-{summary.ruleset_id}", report, now)
    return report


def approve(store: EventStore, candidate: str, by: str, now: datetime, note: str = "") -> RuleSetApproved:
    view, summary = _candidate(store, candidate)
    report = view["rulesets"].latest_report(summary.ruleset_id)
    if report is None:
        raise RulesError(f"rule set {summary.ruleset_id}: no shadow report to approve; run `selfheal rules shadow` first")
    approved = RuleSetApproved(ruleset_id=summary.ruleset_id, report_hash=report["report_hash"], by=by, note=note)
    _append(store, f"ruleset-{summary.ruleset_id}", approved, now)
    return approved


def promote(store: EventStore, settings: Settings, candidate: str, by: str, now: datetime) -> RuleSetActivated:
    """Activate a candidate: only after a shadow report, and in prod only after an approval
    bound to that report's hash (a newer report needs a new approval)."""
    view, summary = _candidate(store, candidate)
    report = view["rulesets"].latest_report(summary.ruleset_id)
    if report is None:
        raise RulesError(f"rule set {summary.ruleset_id}: refused: no shadow report exists; "
                         "run `selfheal rules shadow` first")
    if settings.effective_mode() == "prod" and not any(a["report_hash"] == report["report_hash"]
                                                       for a in summary.approvals):
        raise RulesError(f"rule set {summary.ruleset_id}: refused: prod mode needs an approval of report "
                         f"{report['report_hash']} (`selfheal rules approve`)")
    activated = RuleSetActivated(ruleset_id=summary.ruleset_id, version=summary.version, by=by,
                                 report_hash=report["report_hash"])
    _append(store, f"ruleset-{summary.ruleset_id}", activated, now)
    return activated
