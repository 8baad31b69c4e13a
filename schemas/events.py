"""The vocabulary: every event selfheal can record, in loop order, in one tagged union.

Each event is a frozen msgspec Struct whose tag (the `type` column of the log) is its class
name and whose `SCHEMA_VERSION` is stored beside it. Changing an event's shape means bumping
its SCHEMA_VERSION and registering an upcaster in `schemas.upcasting` from the old shape, so
every row ever written still reads as the current type.

Streams: `incident-<id>`, `intent-<id>`, `run-<id>`, `promotion-<id>`, `deployment-<name>`.
The correlation id of every event in a chain is the incident id that started it; the
causation id is the event that directly caused it.
"""
from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal, Union

import msgspec

from selfheal.schemas.failures import FailureKind, FindingKind
from selfheal.schemas.serving import ServingConfig

Number = Union[int, float]


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag=True):
    SCHEMA_VERSION: ClassVar[int] = 1
    #: fields stored sealed, each event under its own key beside the log (eventstore/sealing.py)
    SEALED: ClassVar[tuple[str, ...]] = ()
    #: fields recorded exactly as given, not redacted: files a person wrote that must load again
    VERBATIM: ClassVar[tuple[str, ...]] = ()


# -- shared value types ---------------------------------------------------------------------

class IncidentSource(msgspec.Struct, frozen=True, kw_only=True):
    kind: Literal["file", "stdin", "journald", "canary", "metrics", "simulator"]
    path: str | None = None
    unit: str | None = None
    canary_id: str | None = None
    first_line: int | None = None


#: the confidences of a finding whose failure was not seen yet: told, never tuned (handlers/intents.py)
TOLD_ONLY = ("truncated", "unsustained")


class Finding(msgspec.Struct, frozen=True, kw_only=True):
    """What one rule recognised in an incident, with the numbers it read and the fix it implies."""

    kind: FindingKind
    rule: str
    rule_version: int
    numbers: dict[str, Number] = {}
    fix_direction: dict[str, str] = {}
    fix: dict[str, Union[bool, int, float]] = {}
    action: Literal["tune", "alert"] = "alert"
    evidence: list[str] = []
    line: int = 0
    note: str = ""
    # how the finding knows the failure: the error "stated" it; vLLM's accounting lines or a
    # traceback's raise site imply it ("inferred"); the log was cut where it would have shown
    # ("truncated"); a runtime symptom was seen fewer times than a window needs, and the log
    # shows nothing else ("unsustained"). handlers/intents.py: what the loop may do at each level
    confidence: Literal["stated", "inferred", "truncated", "unsustained"] = "stated"


class GpuProcess(msgspec.Struct, frozen=True, kw_only=True):
    pid: int
    name: str
    used_bytes: int


class GpuSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """One device as an inventory read it (NVML, host memory, or a simulator scenario)."""

    index: int
    name: str
    total_bytes: int
    used_bytes: int
    free_bytes: int
    processes: list[GpuProcess] = []
    source: str = "nvml"


class CanaryMeasurements(msgspec.Struct, frozen=True, kw_only=True):
    started: bool
    passed_load: bool
    failure_kind: FailureKind | None = None
    failure_stage: Literal["config", "startup", "load"] | None = None
    excerpt: str = ""
    kv_cache_tokens: int = 0
    available_kv_gib: float = 0.0
    max_concurrency: float = 0.0
    throughput_tok_s: float = 0.0
    requests_per_s: float = 0.0
    latency_p50_ms: float = 0.0
    latency_p99_ms: float = 0.0
    ttft_p50_ms: float = 0.0
    preemptions: int = 0
    peak_memory_gib: float = 0.0
    gpu_headroom_gib: float = 0.0
    duration_s: float = 0.0
    # issue 15.4/15.9 (defaulted: older logs decode). What the load phase showed of production's
    # symptoms, for judging at the watcher's thresholds (edges/vllm_measure.py, edges/sim/metrics.py):
    load_s: float = 0.0                  # the load phase's wall time
    preemptions_per_s: float = 0.0       # preemptions / load_s (the watcher's preemption rate)
    peak_kv_usage: float = 0.0           # highest KV cache usage (0..1) seen on /metrics under load
    kv_full_share: float = 0.0           # share of the load's scrapes at or above the watcher's KV threshold
    peak_waiting: int = 0                # longest queue (vllm:num_requests_waiting) under load
    rejected_requests: int = 0           # prompts refused (HTTP 400: longer than max_model_len)
    refusals_per_s: float = 0.0          # rejected_requests / load_s (the watcher's refusal rate)
    prompt_tokens_min: int = 0           # the shortest and longest prompt the load sent
    prompt_tokens_max: int = 0
    metrics_symptoms: tuple[str, ...] = ()  # what production's watcher would report of this load (fails it)
    headroom_source: str = ""            # where gpu_headroom_gib was read ("" : not measured)
    warm_start: bool | None = None       # compiled graphs loaded from a shared cache; None: nothing compiled
    startup_s: float = 0.0               # from the start to /health answering 200


class CandidateEvidence(msgspec.Struct, frozen=True, kw_only=True):
    candidate_id: str
    config: ServingConfig
    outcome: str
    failure_kind: FailureKind | None = None
    fitness: float | None = None


# -- 1. observer ----------------------------------------------------------------------------

class IncidentCaptured(Event, frozen=True, kw_only=True):
    """Raw text from a log, a canary or a metric symptom, kept whether or not a rule matches.

    Secrets are redacted before it is built; the text is sealed in the log, so that what got
    in anyway can be forgotten (IncidentForgotten)."""

    SCHEMA_VERSION: ClassVar[int] = 2
    SEALED: ClassVar[tuple[str, ...]] = ("raw_text",)
    incident_id: str
    deployment: str
    source: IncidentSource
    raw_text: str
    fingerprint: str
    context: dict[str, str] = {}


class IncidentForgotten(Event, frozen=True, kw_only=True):
    """`selfheal forget`: the key of an incident's sealed text is destroyed; the text is
    unreadable from now on, and this says when, by whom and why."""

    incident_id: str
    event_id: str                 # the IncidentCaptured whose key was destroyed
    by: str
    reason: str = ""


class ObservationMade(Event, frozen=True, kw_only=True):
    observation_id: str
    incident_id: str
    deployment: str
    finding: Finding
    others: list[Finding] = []
    environment: str = ""
    #: set when the incident is a canary's own output: evidence for the run, not a new intent
    canary_id: str | None = None
    #: the memory figures its last start attempt printed (observer/accounting.read_start): the
    #: calibrated predictor's facts, kept as numbers so no projection holds the sealed text
    accounting: dict[str, float] = {}


class IncidentUnmatched(Event, frozen=True, kw_only=True):
    """No rule explains the incident: nothing to heal, but kept for future rules."""

    incident_id: str
    deployment: str
    rules_version: str


# -- 2. intents and the gate ----------------------------------------------------------------

class IntentRaised(Event, frozen=True, kw_only=True):
    intent_id: str
    deployment: str
    incident_id: str
    observation_id: str
    kind: FindingKind
    action: Literal["tune", "alert"]
    fingerprint: str
    seed_fix: dict[str, Union[bool, int, float]] = {}
    current: ServingConfig
    environment: str = ""
    reason: str = ""
    #: the finding's numbers: a repeat folds into this intent only when its numbers agree
    #: (projections/intents.py `same_numbers`); {} in intents recorded before numbers were kept
    numbers: dict[str, Number] = {}
    #: until when a repeat of this failure folds into this intent (the dedupe window from its
    #: time); `heal --force` raises a new one sooner. None in intents recorded before it was kept
    dedupe_until: datetime | None = None
    #: the failing start's memory figures (its ObservationMade's `accounting`): the calibrated
    #: predictor's first fact (projections/predictions.py)
    accounting: dict[str, float] = {}


class RetryForced(Event, frozen=True, kw_only=True):
    """`heal --force`: the incident recorded next in this stream raises an intent of its own,
    even where the same failure's intent is inside the dedupe window (a person retrying after
    an alert or an escalation). Recorded, so replay folds or raises exactly as the loop did."""

    incident_id: str
    deployment: str


class IntentDeduplicated(Event, frozen=True, kw_only=True):
    """The same incident fingerprint inside the window: folded into the open intent."""

    intent_id: str
    incident_id: str
    fingerprint: str
    window_s: int


class RunRequested(Event, frozen=True, kw_only=True):
    run_id: str
    intent_id: str
    deployment: str
    mode: Literal["dev", "prod", "disabled"]


class RunRefused(Event, frozen=True, kw_only=True):
    run_id: str
    intent_id: str
    deployment: str
    reason: str
    next_allowed_at: datetime | None = None
    #: the fleet node whose runner decided (`--node`, $SELFHEAL_NODE, else the hostname);
    #: "" in events recorded before nodes were named
    node: str = ""


class RunStarted(Event, frozen=True, kw_only=True):
    run_id: str
    intent_id: str
    deployment: str
    mode: Literal["dev", "prod"]
    current: ServingConfig
    environment: str
    #: the fleet node whose runner started the run; "" in events recorded before nodes were named
    node: str = ""


class RunFinished(Event, frozen=True, kw_only=True):
    run_id: str
    deployment: str
    outcome: Literal["promoted", "escalated"]
    succeeded: bool
    canaries: int
    #: pre-flight could not read the GPU inventory: the run ended before any canary, and the
    #: rate limit counts it neither as a run nor as a failure (projections/rate_limit.py)
    inventory_unavailable: bool = False


class IntentArchived(Event, frozen=True, kw_only=True):
    intent_id: str
    deployment: str
    outcome: Literal["promoted", "escalated", "refused", "alerted", "recorded_only", "superseded"]
    run_id: str | None = None


# -- 3-6. candidates, pre-flight, canary, score ---------------------------------------------

class CandidateProposed(Event, frozen=True, kw_only=True):
    run_id: str
    candidate_id: str
    deployment: str
    config: ServingConfig
    changes: dict[str, list[Union[bool, int, float]]]
    origin: Literal["seed", "tournament", "refine"]
    rank: int
    predicted: float | None = None
    reason: str = ""


class PreflightPassed(Event, frozen=True, kw_only=True):
    run_id: str
    candidate_id: str
    required_bytes: int
    free_bytes: int
    margin_bytes: int
    snapshot: list[GpuSnapshot]


class PreflightRejected(Event, frozen=True, kw_only=True):
    run_id: str
    candidate_id: str
    reason: str
    required_bytes: int
    free_bytes: int
    margin_bytes: int
    snapshot: list[GpuSnapshot]
    #: the inventory could not be read (no NVML, no driver): no candidate can be judged, so
    #: the run ends with this rejection (handlers/preflight.py)
    inventory_unavailable: bool = False


class CanaryStarted(Event, frozen=True, kw_only=True):
    run_id: str
    candidate_id: str
    canary_id: str
    backend: str
    simulated: bool
    command: list[str] = []
    pid: int | None = None
    pgid: int | None = None
    port: int | None = None


class CanaryLaunched(Event, frozen=True, kw_only=True):
    """The canary's process exists: recorded as soon as it does, so a restarted selfheal can
    find and stop a canary orphaned by a crash. `attempt` counts launches of one canary."""

    canary_id: str
    attempt: int
    pid: int
    pgid: int
    port: int | None = None
    command: list[str] = []


class CanaryOrphanReaped(Event, frozen=True, kw_only=True):
    """A canary process group left behind by a crash, stopped before the canary runs again."""

    canary_id: str
    pid: int
    pgid: int
    alive: bool
    signal: str | None = None


class CanaryCompleted(Event, frozen=True, kw_only=True):
    run_id: str
    candidate_id: str
    canary_id: str
    backend: str
    simulated: bool
    measurements: CanaryMeasurements
    log_incident_id: str | None = None
    #: the memory figures the canary's log printed (observer/accounting.read_start of its
    #: recorded log): the calibrated predictor's facts of this start
    accounting: dict[str, float] = {}


class CanaryPredicted(Event, frozen=True, kw_only=True):
    """What the calibrated model (handlers/models/calibration.py) expected of a canary's
    candidate, recorded before the canary runs, beside what it will measure (CanaryCompleted):
    the KV cache in memory and tokens, the band it claimed, and whether the candidate starts.
    Decided from earlier events only (handlers/predict.py), so a replay records the same."""

    run_id: str
    candidate_id: str
    deployment: str
    config: ServingConfig
    kv_cache_tokens: int | None = None
    low_tokens: int | None = None
    high_tokens: int | None = None
    available_kv_gib: float | None = None
    #: relative half-width of the band, from the errors of earlier predictions of this deployment
    band: float = 0.0
    starts: bool | None = None
    failure_kind: FailureKind | None = None
    reason: str = ""
    #: the incidents (production's failing start, earlier canaries' logs) it was calibrated from
    calibrated_from: list[str] = []
    model: str = ""


class CandidateScored(Event, frozen=True, kw_only=True):
    run_id: str
    candidate_id: str
    passed: bool
    fitness: float | None
    components: dict[str, float] = {}
    reason: str = ""


class PromotionProposed(Event, frozen=True, kw_only=True):
    promotion_id: str
    run_id: str
    deployment: str
    candidate_id: str
    config: ServingConfig
    previous: ServingConfig
    fitness: float
    evidence_hash: str
    simulated: bool
    requires_approval: bool


class EscalationRaised(Event, frozen=True, kw_only=True):
    run_id: str | None
    intent_id: str
    deployment: str
    reason: str
    candidates: list[CandidateEvidence] = []
    #: until when a repeat of the failure folds into the intent, and how to retry sooner
    #: (projections/intents.py `retry_hint`); "" where not said
    retry: str = ""


# -- 7. baseline ----------------------------------------------------------------------------

class BaselineImported(Event, frozen=True, kw_only=True):
    """The configuration a deployment runs before selfheal changed anything: version 1."""

    deployment: str
    version: int
    config: ServingConfig
    source: str
    environment: str = ""

class PromotionApproved(Event, frozen=True, kw_only=True):
    """A person approved the evidence with this hash; a commit must follow before expires_at."""

    promotion_id: str
    by: str
    evidence_hash: str
    expires_at: datetime
    note: str = ""


class PromotionRejected(Event, frozen=True, kw_only=True):
    promotion_id: str
    by: str
    note: str = ""


class PromotionLapsed(Event, frozen=True, kw_only=True):
    """Nobody approved in time, or the approval expired before a commit: nothing is written."""

    promotion_id: str
    reason: str


class PromotionNotCommitted(Event, frozen=True, kw_only=True):
    """A promotion that can never reach production as it is (simulated results, no config file)."""

    promotion_id: str
    deployment: str
    reason: str


class BaselineCommitStarted(Event, frozen=True, kw_only=True):
    """Recorded before the config file is written: the write it announces happens at most once."""

    commit_id: str
    deployment: str
    promotion_id: str | None
    version: int
    config: ServingConfig
    path: str


class BaselineCommitted(Event, frozen=True, kw_only=True):
    commit_id: str
    deployment: str
    version: int
    config: ServingConfig
    path: str
    sha256: str
    changed: bool = True
    previous_path: str | None = None


class ReloadRequested(Event, frozen=True, kw_only=True):
    """Recorded before the server is reloaded, then verified (health within a deadline, a probe)."""

    commit_id: str
    deployment: str
    purpose: Literal["commit", "rollback"]
    method: Literal["signal", "restart", "none"]
    target: str


class VerificationFinished(Event, frozen=True, kw_only=True):
    commit_id: str
    deployment: str
    purpose: Literal["commit", "rollback"]
    healthy: bool
    detail: str = ""


class RollbackStarted(Event, frozen=True, kw_only=True):
    commit_id: str
    deployment: str
    restore_version: int
    reason: str


class RolledBack(Event, frozen=True, kw_only=True):
    """The previous version's file is back in place (its reload and verification follow)."""

    commit_id: str
    deployment: str
    restored_version: int
    reason: str
    sha256: str = ""


# -- alerts ---------------------------------------------------------------------------------

class AlertRaised(Event, frozen=True, kw_only=True):
    alert_id: str
    deployment: str
    kind: Literal["escalation", "promotion_lapsed", "verification_failed", "rolled_back"]
    summary: str
    fingerprint: str
    evidence: dict[str, str] = {}


class DeliveryAttempt(msgspec.Struct, frozen=True, kw_only=True):
    number: int
    status: int | None = None
    error: str | None = None
    duration_s: float = 0.0


class AlertDelivered(Event, frozen=True, kw_only=True):
    """One sink's delivery of an alert (or of a group of repeats), with every attempt."""

    alert_id: str
    sink: str
    ok: bool
    count: int = 1
    attempts: list[DeliveryAttempt] = []
    detail: str = ""


# -- 8. rule evolution ----------------------------------------------------------------------

class VerdictRecorded(Event, frozen=True, kw_only=True):
    """A person's judgement of an incident: the labelled corpus rules are measured against."""

    incident_id: str
    kind: FindingKind | Literal["none"]  # "none": no configuration failure
    by: str
    note: str = ""


class RuleSetProposed(Event, frozen=True, kw_only=True):
    """A candidate rule set, with its full text, so any later replay can load it from the log."""

    VERBATIM: ClassVar[tuple[str, ...]] = ("text",)  # a rule's `key = "free"` is no credential
    ruleset_id: str
    version: str
    source: str
    text: str


class RuleSetShadowed(Event, frozen=True, kw_only=True):
    """A shadow evaluation: every captured incident replayed through candidate and active rules."""

    ruleset_id: str
    against: str
    report_hash: str
    incidents: int
    agreements: int
    disagreements: list[dict[str, str]] = []
    precision: float | None = None
    recall: float | None = None
    labelled: int = 0


class RuleSetApproved(Event, frozen=True, kw_only=True):
    ruleset_id: str
    report_hash: str
    by: str
    note: str = ""


class RuleSetActivated(Event, frozen=True, kw_only=True):
    ruleset_id: str
    version: str
    by: str
    report_hash: str


#: every event type, by tag; the one place that lists what the log can hold
AnyEvent = Union[
    IncidentCaptured, IncidentForgotten, ObservationMade, IncidentUnmatched,
    IntentRaised, RetryForced, IntentDeduplicated, RunRequested, RunRefused, RunStarted, RunFinished, IntentArchived,
    CandidateProposed, PreflightPassed, PreflightRejected, CanaryStarted, CanaryLaunched, CanaryOrphanReaped,
    CanaryCompleted, CanaryPredicted,
    CandidateScored, PromotionProposed, EscalationRaised,
    PromotionApproved, PromotionRejected, PromotionLapsed, PromotionNotCommitted,
    BaselineImported, BaselineCommitStarted, BaselineCommitted, ReloadRequested, VerificationFinished,
    RollbackStarted, RolledBack, AlertRaised, AlertDelivered,
    VerdictRecorded, RuleSetProposed, RuleSetShadowed, RuleSetApproved, RuleSetActivated,
]

EVENT_TYPES: dict[str, type[Event]] = {cls.__name__: cls for cls in AnyEvent.__args__}
