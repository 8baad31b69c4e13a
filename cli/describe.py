"""One readable line per event, for timelines (`demo`, `heal`, `show`)."""
from __future__ import annotations

from selfheal.eventstore.recorder import utc_iso
from selfheal.eventstore.store import Recorded


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _config(c) -> str:
    eager = " enforce_eager" if c.enforce_eager else ""
    return (f"util={c.gpu_memory_utilization:g} max_model_len={c.max_model_len} max_num_seqs={c.max_num_seqs} "
            f"max_num_batched_tokens={c.max_num_batched_tokens}{eager}")


def _changes(changes: dict) -> str:
    return ", ".join(f"{k} {old}->{new}" for k, (old, new) in changes.items())


def describe(r: Recorded) -> str:
    e, t = r.event, r.type
    if t == "BaselineImported":
        return f"{e.deployment}: baseline v{e.version} from {e.source}: {_config(e.config)}"
    if t == "IncidentCaptured":
        lines = len(e.raw_text.splitlines())  # a last line's newline starts no line of its own
        return f"{e.deployment}: {_count(lines, 'line')} from {e.source.kind}" + (f" {e.source.path}" if e.source.path else "")
    if t == "IncidentForgotten":
        return f"incident {e.incident_id[:8]}'s text forgotten by {e.by}" + (f": {e.reason}" if e.reason else "")
    if t == "ObservationMade":
        f = e.finding
        nums = ", ".join(f"{k}={v:g}" for k, v in f.numbers.items())
        fix = ", ".join(f"{k}={v}" for k, v in f.fix.items()) or "none"
        who = "canary log" if e.canary_id else "incident"
        return f"{who}: {f.kind} ({f.rule} v{f.rule_version}{'; ' + nums if nums else ''}); seed fix: {fix}"
    if t == "IncidentUnmatched":
        if r.correlation_id and e.incident_id != r.correlation_id:
            # a canary's own log, captured in the incident's chain: a healthy one is no fault
            return f"canary log {e.incident_id[:8]}: no failure found (rules {e.rules_version})"
        return f"no rule explains incident {e.incident_id[:8]} (rules {e.rules_version}); kept for future rules"
    if t == "IntentRaised":
        what = f"tune: {', '.join(f'{k}={v}' for k, v in e.seed_fix.items())}" if e.action == "tune" else f"alert: {e.reason}"
        if e.action == "tune" and not e.seed_fix:  # the fix lay outside the bounds: the reason says what is searched
            what = f"tune, no seed: {e.reason}"
        return f"intent {e.intent_id[:8]} for {e.kind}: {what}"
    if t == "RetryForced":
        return f"{e.deployment}: retry forced (heal --force): incident {e.incident_id[:8]} is not folded into an earlier intent"
    if t == "IntentDeduplicated":
        return f"same incident again within {e.window_s} s: folded into intent {e.intent_id[:8]}"
    if t == "RunRequested":
        return f"run {e.run_id[:8]} requested in {e.mode} mode"
    if t == "RunRefused":
        when = utc_iso(e.next_allowed_at) if e.next_allowed_at else "when the current run ends"
        return f"run {e.run_id[:8]} refused: {e.reason}; next allowed {when}"
    if t == "RunStarted":
        return f"run {e.run_id[:8]} started from {_config(e.current)}"
    if t == "CandidateProposed":
        pred = f", predicted fitness {e.predicted:g}" if e.predicted is not None else ""
        origin = "refine, after a passing seed" if e.origin == "refine" else e.origin
        return f"candidate #{e.rank} ({origin}): {_changes(e.changes)}{pred}"
    if t == "PreflightPassed":
        return f"pre-flight ok: needs {e.required_bytes / 2**30:.2f} GiB of {e.free_bytes / 2**30:.2f} GiB free"
    if t == "PreflightRejected":
        return f"pre-flight rejected: {e.reason}"
    if t == "CanaryStarted":
        return f"canary {e.canary_id[:8]} started ({e.backend}{', simulated' if e.simulated else ''})"
    if t == "CanaryPredicted":
        if e.kv_cache_tokens is None:
            return f"predicted: nothing ({e.reason})" if e.reason else "predicted: nothing"
        verdict = "starts" if e.starts else f"fails: {e.failure_kind}" if e.starts is False else "start unknown"
        return (f"predicted: {e.kv_cache_tokens:,} KV tokens (band {e.low_tokens:,}-{e.high_tokens:,}), {verdict}"
                if e.low_tokens is not None and e.high_tokens is not None
                else f"predicted: {e.kv_cache_tokens:,} KV tokens, {verdict}")
    if t == "CanaryCompleted":
        m = e.measurements
        if not m.started or not m.passed_load:
            return f"canary failed at {m.failure_stage} after {m.duration_s:.0f} s: {m.failure_kind}"
        return (f"canary ok after {m.duration_s:.0f} s: {m.kv_cache_tokens:,} KV tokens, {m.max_concurrency:.2f}x concurrency, "
                f"{m.throughput_tok_s:.0f} tok/s, p99 {m.latency_p99_ms:.0f} ms, {m.preemptions} preemptions, "
                f"headroom {m.gpu_headroom_gib:.2f} GiB")
    if t == "CandidateScored":
        return f"scored: fitness {e.fitness:g} ({e.reason})" if e.passed else f"scored: failed ({e.reason})"
    if t == "PromotionProposed":
        sim = " [simulated: never committed to production]" if e.simulated else ""
        gate = "waits for approval" if e.requires_approval else "no approval needed"
        return f"PROMOTION {e.promotion_id[:8]} ({gate}): {_config(e.config)}{sim}"
    if t == "EscalationRaised":
        return f"ESCALATION: {e.reason}" + (f" (retry: {e.retry})" if e.retry else "")
    if t == "RunFinished":
        return f"run {e.run_id[:8]} finished: {e.outcome} after {e.canaries} canar{'y' if e.canaries == 1 else 'ies'}"
    if t == "IntentArchived":
        return f"intent {e.intent_id[:8]} archived: {e.outcome}"
    return _stage7(e, t)


def _stage7(e, t: str) -> str:
    if t == "PromotionNotCommitted":
        return f"promotion {e.promotion_id[:8]} not committed: {e.reason}"
    if t == "PromotionApproved":
        return f"promotion {e.promotion_id[:8]} approved by {e.by} (evidence {e.evidence_hash[:19]})"
    if t == "PromotionRejected":
        return f"promotion {e.promotion_id[:8]} rejected by {e.by}"
    if t == "PromotionLapsed":
        return f"promotion {e.promotion_id[:8]} lapsed: {e.reason}"
    if t == "BaselineCommitStarted":
        return f"{e.deployment}: committing v{e.version} to {e.path}"
    if t == "BaselineCommitted":
        return f"{e.deployment}: v{e.version} written ({'changed' if e.changed else 'already in place'})"
    if t == "ReloadRequested":
        return f"{e.deployment}: reload for the {e.purpose} ({e.method} {e.target})".rstrip()
    if t == "VerificationFinished":
        return f"{e.deployment}: {e.purpose} {'verified' if e.healthy else 'FAILED verification'}: {e.detail}"
    if t == "RollbackStarted":
        return f"{e.deployment}: rolling back to v{e.restore_version}: {e.reason}"
    if t == "RolledBack":
        return f"{e.deployment}: v{e.restored_version} restored"
    if t == "AlertRaised":
        return f"ALERT {e.kind}: {e.summary}"
    if t == "AlertDelivered":
        return f"alert {e.alert_id[:8]} to {e.sink}: {'delivered' if e.ok else 'FAILED'} after {_count(len(e.attempts), 'attempt')}"
    if t == "CanaryLaunched":
        return f"canary {e.canary_id[:8]} launched: pid {e.pid}, port {e.port}"
    if t == "CanaryOrphanReaped":
        return f"orphaned canary pid {e.pid} stopped ({e.signal or 'already gone'})"
    if t == "VerdictRecorded":
        return f"incident {e.incident_id[:8]} judged {e.kind} by {e.by}"
    if t == "RuleSetProposed":
        return f"rule set {e.ruleset_id[:19]} ({e.version}) proposed from {e.source}"
    if t == "RuleSetShadowed":
        return f"rule set {e.ruleset_id[:19]} shadowed: {e.agreements}/{e.incidents} agree"
    if t in ("RuleSetApproved", "RuleSetActivated"):
        return f"rule set {e.ruleset_id[:19]} {'approved' if t == 'RuleSetApproved' else 'activated'} by {e.by}"
    return t


def timeline_line(r: Recorded) -> str:
    """The event's time in the log's own spelling (ISO-8601 UTC, 'Z'): the value --as-of,
    --since and --until take."""
    return f"{r.occurred_at}  {r.type:<21} {describe(r)}"
