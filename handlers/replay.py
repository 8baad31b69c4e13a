"""Replay: captured incidents through the whole loop again, in a scratch store, with the
recorded effects standing in for new ones, and a report of where the decisions differ.

Nothing is executed. Every reactor runs as it did; every activity is treated by its type
(handlers.runtime.Activity): a replayable one acts through a recorded port instead of the
world (`RECORDED_PORTS`), the others reach production (commits, reloads, alert deliveries)
and are left out. A canary for a configuration that ran before returns its recorded result;
one that never ran is answered by the simulator from the recorded environment (sim
deployments) and marked so, or reported as having no recorded result. Pre-flight reads the
last snapshot recorded for the deployment. Incidents keep their ids and times, so derived ids
are the same and a replay of a replay is identical.
"""
from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Iterable
from datetime import datetime

import msgspec
from pydantic import ValidationError

from selfheal import projections
from selfheal.eventstore.audit import events, row_json
from selfheal.eventstore.recorder import NewEvent
from selfheal.eventstore import sealing
from selfheal.eventstore.store import EventStore, Pending, Recorded, memory_store, typed
from selfheal.handlers.flow import handlers as loop_handlers
from selfheal.handlers.observe import ObserveIncident
from selfheal.handlers.ports import CanaryOutcome, DeploymentEdges, InventoryUnavailable
from selfheal.handlers.runtime import Activity, Runner
from selfheal.schemas.config import ConfigError, Settings, describe_validation_error
from selfheal.schemas.events import CanaryMeasurements, GpuSnapshot
from selfheal.schemas.serving import ServingConfig

RECORDED = "[selfheal replay] recorded result of canary {}"
SIMULATED = "[selfheal replay] no canary ran for this configuration: simulated from the recorded environment"
MISSING = "[selfheal replay] no canary ran for this configuration and none can be simulated"


class RecordedEffects(msgspec.Struct):
    canaries: dict[tuple[str, ServingConfig], tuple[str, CanaryMeasurements, str]] = {}
    snapshots: dict[str, list[GpuSnapshot]] = {}


def recorded_effects(events: Iterable[Recorded]) -> RecordedEffects:
    """Canary results by (deployment, config) and the last GPU snapshot of each deployment."""
    effects = RecordedEffects()
    candidates: dict[str, tuple[str, ServingConfig]] = {}
    logs: dict[str, str] = {}
    for r in events:
        e = r.event
        if r.type == "CandidateProposed":
            candidates[e.candidate_id] = (e.deployment, e.config)
        elif r.type == "IncidentCaptured" and e.source.kind == "canary":
            logs[e.incident_id] = e.raw_text
        elif r.type == "CanaryCompleted" and e.candidate_id in candidates:
            key = candidates[e.candidate_id]
            effects.canaries[key] = (e.canary_id, e.measurements, logs.get(e.log_incident_id or "", ""))
        elif r.type in ("PreflightPassed", "PreflightRejected") and e.snapshot and e.candidate_id in candidates:
            effects.snapshots[candidates[e.candidate_id][0]] = list(e.snapshot)
    return effects


class ReplayCanary:
    name = "replay"
    simulated = False

    def __init__(self, deployment: str, effects: RecordedEffects, original: DeploymentEdges | None):
        self.deployment, self.effects, self.original = deployment, effects, original
        self.answers: list[str] = []

    def run(self, config, started_at: datetime, on_launch=None, *, canary_id=None) -> CanaryOutcome:
        found = self.effects.canaries.get((self.deployment, config))
        if found is not None:
            canary, measurements, log = found
            self.answers.append("recorded")
            return CanaryOutcome(measurements=measurements, log_text=RECORDED.format(canary) + "\n" + log)
        if self.original is not None and self.original.backend.simulated:
            outcome = self.original.backend.run(config, started_at)
            self.answers.append("simulated")
            return msgspec.structs.replace(outcome, log_text=SIMULATED + "\n" + outcome.log_text)
        self.answers.append("missing")
        return CanaryOutcome(measurements=CanaryMeasurements(started=False, passed_load=False,
                                                             failure_kind="not_recorded", excerpt=MISSING),
                             log_text=MISSING)


class ReplayInventory:
    def __init__(self, snapshot: list[GpuSnapshot] | None, original: DeploymentEdges | None):
        self.snapshot_, self.original = snapshot, original

    def snapshot(self) -> list[GpuSnapshot]:
        if self.snapshot_:
            return self.snapshot_
        if self.original is not None and self.original.backend.simulated:
            return self.original.inventory.snapshot()  # a scenario file: no effect
        raise InventoryUnavailable("no GPU snapshot recorded for this deployment", source="replay")


#: the ports a replay answers from the log instead of the world; every other port is unwired
RECORDED_PORTS = ("backend", "inventory")


def recorded_ports(deployment: DeploymentEdges, effects: RecordedEffects) -> DeploymentEdges:
    """The deployment with recorded answers on RECORDED_PORTS and nothing that reaches production."""
    return dataclasses.replace(deployment, backend=ReplayCanary(deployment.name, effects, deployment),
                               inventory=ReplayInventory(effects.snapshots.get(deployment.name), deployment),
                               config_file=None, reloader=None, alerts=None, reaper=None)


def replayed_handlers(loop: list) -> list:
    """Every reactor; the replayable activities (they act through RECORDED_PORTS); no activity
    that reaches production."""
    kept = []
    for handler in loop:
        if isinstance(handler, Activity):
            if not handler.replayable:
                continue
            if handler.port not in RECORDED_PORTS:
                raise TypeError(f"activity {handler.name!r} is replayable through port {handler.port!r}, "
                                "which replay has no recorded answer for")
        kept.append(handler)
    return kept


def decisions(events: list[Recorded]) -> dict:
    """What was decided about one incident, in fields that compare across logs: each a JSON
    object (or None where nothing was decided), never a sentence holding JSON or a repr, so
    that `replay --json` is one document a tool reads without parsing strings."""
    out: dict = {"observation": None, "intent": None, "gate": None, "candidates": [], "outcome": None}
    for r in events:
        e, t = r.event, r.type
        if t == "ObservationMade" and not e.canary_id:
            out["observation"] = {"kind": e.finding.kind, "rule": e.finding.rule,
                                  "rule_version": e.finding.rule_version}
        elif t == "IncidentUnmatched" and out["observation"] is None:
            out["observation"] = {"kind": None}
        elif t == "IntentRaised":
            out["intent"] = ({"action": "tune", "seed_fix": dict(sorted(e.seed_fix.items()))}
                             if e.action == "tune" else {"action": "alert"})
        elif t == "IntentDeduplicated":
            out["intent"] = {"action": "deduplicated"}
        elif t == "RunStarted":
            out["gate"] = {"decision": "started"}
        elif t == "RunRefused":
            # the rules that refused it ("cooldown", "rate limit", ...), not their wording or times
            out["gate"] = {"decision": "refused", "reason": [part.split(":")[0] for part in e.reason.split("; ")]}
        elif t == "CandidateProposed":
            out["candidates"].append(dict(sorted(e.changes.items())))
        elif t == "PromotionProposed":
            out["outcome"] = {"outcome": "promoted", "config": msgspec.to_builtins(e.config)}
        elif t == "EscalationRaised":
            # the reason up to its parenthesis: the numbers after it vary between logs
            out["outcome"] = {"outcome": "escalated", "reason": e.reason.split(" (")[0]}
        elif t == "IntentArchived" and out["outcome"] is None:
            out["outcome"] = {"outcome": e.outcome}
    return out


class IncidentReplay(msgspec.Struct):
    incident_id: str
    deployment: str
    occurred_at: str
    original: dict
    replayed: dict
    differs: list[str]


class ReplayReport(msgspec.Struct):
    incidents: int
    differing: int
    canary_answers: dict[str, int]
    results: list[IncidentReplay]
    #: incidents in the range that were not replayed: their text was forgotten (`forget`)
    forgotten: list[str] = []


def _chain(store: EventStore, incident_id: str) -> list[Recorded]:
    return [typed(row) for row in events(store, correlation=incident_id)]


def apply_overrides(settings: Settings, assignments: Iterable[str], mode: str | None) -> Settings:
    """`--set rate_limit.runs=5` style overrides, validated like the config file."""
    data = settings.model_dump(mode="json")
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {assignment!r}: expected KEY=VALUE, e.g. rate_limit.runs=5")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw  # a bare word: take it as a string
        node = data
        *path, last = key.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    if mode:
        data["mode"] = mode
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error("--set", exc)) from None


def replay(store: EventStore, settings: Settings, deployments: dict[str, DeploymentEdges], *,
           since: str | None = None, until: str | None = None, ruleset=None,
           mode: str | None = None) -> ReplayReport:
    """Replay every captured incident (not canary logs) between `since` and `until`."""
    originals = list(store.read())
    effects = recorded_effects(originals)
    edges = {name: recorded_ports(d, effects) for name, d in deployments.items()}
    scratch = memory_store()
    handlers = replayed_handlers(loop_handlers(settings, edges, mode or settings.mode))
    if ruleset is not None:
        handlers = [ObserveIncident(edges, settings.observer.safety_buffer, ruleset) if h.name == "observe" else h
                    for h in handlers]
    runner = Runner(scratch, handlers, projections.registered())
    results, forgotten = [], []
    for r in originals:
        if r.type in ("BaselineImported", "RetryForced"):  # a forced retry is a person's input, like the baseline
            scratch.append(r.stream, [Pending(event=r.event, event_id=r.event_id, occurred_at=r.occurred)])
            continue
        if r.type != "IncidentCaptured" or r.event.source.kind == "canary" or r.event.deployment not in edges:
            continue
        if (since and r.occurred_at < since) or (until and r.occurred_at >= until):
            continue
        if sealing.forgotten(r.event):
            forgotten.append(r.event.incident_id)
            continue
        scratch.append(r.stream, [Pending(event=r.event, event_id=r.event_id, occurred_at=r.occurred,
                                          correlation_id=r.correlation_id)])
        runner.run_until_idle()
        before, after = decisions(_chain(store, r.event_id)), decisions(_chain(scratch, r.event_id))
        differs = [k for k in before if before[k] != after[k]]
        results.append(IncidentReplay(incident_id=r.event.incident_id, deployment=r.event.deployment,
                                      occurred_at=r.occurred_at, original=before, replayed=after, differs=differs))
    answers: dict[str, int] = {}
    for d in edges.values():
        for answer in d.backend.answers:
            answers[answer] = answers.get(answer, 0) + 1
    return ReplayReport(incidents=len(results), differing=sum(1 for x in results if x.differs),
                        canary_answers=answers, results=results, forgotten=forgotten)


BUNDLE_FORMAT = 1
#: the type of a bundle's first line (its header, in the events envelope)
BUNDLE_TYPE = "SelfhealBundle"


def find_incident(store: EventStore, incident_id: str) -> Recorded:
    """The one captured incident whose id starts with `incident_id` (LookupError otherwise)."""
    found = [r for r in store.read(types=["IncidentCaptured"]) if r.event.incident_id.startswith(incident_id)]
    if len(found) != 1:
        raise LookupError(f"incident {incident_id!r}: " + ("no such incident" if not found else "ambiguous"))
    return found[0]


def export_bundle(store: EventStore, settings: Settings, incident_id: str) -> list[str]:
    """The incident, every event of its chain, the deployment's baseline and its settings,
    as JSON Lines: everything `replay_bundle` needs on another machine."""
    incident = find_incident(store, incident_id)
    deployment = incident.event.deployment
    header = {"selfheal_bundle": BUNDLE_FORMAT, "incident_id": incident.event.incident_id, "deployment": deployment,
              "settings": settings.model_dump(mode="json", include={"mode", "rate_limit", "observer", "tournament",
                                                                       "preflight"})
              | {"deployments": {deployment: settings.deployments[deployment].model_dump(mode="json")}
                 if deployment in settings.deployments else {}}}
    # a bundle travels: the deployment's secrets (its env, its command's credentials) stay here
    redactor = store.redactor
    for d in header["settings"].get("deployments", {}).values():
        if d.get("env"):
            d["env"] = redactor.env(d["env"])
        for holder, name in [(d, "command"), (d, "serve_command"), (d.get("reload") or {}, "argv"),
                             *((sink, "argv") for sink in d.get("alerts") or [])]:
            if holder.get(name):
                holder[name] = redactor.argv(holder[name])
    lines = [msgspec.json.encode(_header_row(incident, redactor.value(header))).decode()]
    lines += [row_json(row) for row in events(store, stream=f"deployment-{deployment}", types=["BaselineImported"])]
    lines += [row_json(row) for row in events(store, correlation=incident.correlation_id or incident.event_id)]
    return lines


def _header_row(incident: Recorded, header: dict) -> dict:
    """The bundle's header in the `events --json` envelope, so that every line of a bundle has
    one shape: type `SelfhealBundle`, position 0 and no hash (it is no row of any log), its
    times and correlation the incident's (an export of the same incident is the same bytes)."""
    return {"position": 0, "event_id": f"bundle-{header['incident_id']}", "stream": "bundle", "version": 0,
            "type": BUNDLE_TYPE, "schema_version": header.pop("selfheal_bundle"), "occurred_at": incident.occurred_at,
            "recorded_at": incident.occurred_at, "correlation_id": incident.correlation_id or incident.event_id,
            "causation_id": None, "data": header, "hash": ""}


def _read_header(line: str, source: str) -> dict:
    """The header's fields, from an envelope (`SelfhealBundle`) or the bare object bundles held
    before the envelope (`{"selfheal_bundle": 1, ...}`)."""
    try:
        row = msgspec.json.decode(line)
    except msgspec.DecodeError as exc:
        raise ValueError(f"{source}: line 1: not JSON: {exc}") from None
    if isinstance(row, dict) and row.get("type") == BUNDLE_TYPE and isinstance(row.get("data"), dict):
        row = {**row["data"], "selfheal_bundle": row.get("schema_version")}
    if not isinstance(row, dict) or row.get("selfheal_bundle") != BUNDLE_FORMAT:
        raise ValueError(f"{source}: line 1: not a selfheal bundle (format {BUNDLE_FORMAT})")
    if not isinstance(row.get("settings"), dict):
        raise ValueError(f"{source}: line 1: the bundle header has no settings object")
    return row


def import_bundle(lines: Iterable[str], source: str = "bundle") -> tuple[Settings, EventStore]:
    """A scratch store holding a bundle's events exactly (ids, streams, times), and its settings."""
    lines = [line for line in lines if line.strip()]
    if not lines:
        raise ValueError(f"{source}: empty: not a selfheal bundle (format {BUNDLE_FORMAT})")
    header = _read_header(lines[0], source)
    settings = Settings.model_validate(header["settings"])
    store = memory_store()
    for number, line in enumerate(lines[1:], start=2):
        try:
            row = msgspec.json.decode(line)
            store.recorder.append(row["stream"], [NewEvent(
                event_id=row["event_id"], type=row["type"], schema_version=row["schema_version"],
                occurred_at=row["occurred_at"], data=msgspec.json.encode(row["data"]).decode(),
                correlation_id=row["correlation_id"], causation_id=row["causation_id"])])
        except (msgspec.DecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{source}: line {number}: not an event row: {exc}") from None
    return settings, store
