"""Read-only SQL views over the embedded log, for people who browse it (`selfheal ui`, datasette,
`sqlite3`): the questions a person asks of a run, answered in columns instead of JSON.

Why they live beside the format number and not inside it: a view stores no data and changes
nothing, so a log with or without them is the same log. They are created with the tables of a
new log (and by every format migration), and `SQLiteRecorder.ensure_views` replaces them
whenever the stored definition differs from this module's, so an older log gets them (or newer
definitions) the first time `selfheal ui` opens it. The append-only triggers, the hash chain
and `verify` see only the `events` table and never a view.

Every view reads `events` through its `events_type` index (one scan per event type it needs),
and joins on ids the bodies carry (`$.candidate_id`, `$.alert_id`, ...). The joined side of each
join ends in `LIMIT -1` (no limit): a subquery with a LIMIT is never flattened into the join, so
SQLite computes it once and indexes it for the join (an automatic index), instead of scanning
every event of that type for every row: the candidates of a 20,000-event log took 29 s without
it. `MATERIALIZED` says the same, but only from SQLite 3.35 on.
"""
from __future__ import annotations

import sqlite3

def _j(path: str, alias: str = "", table: str = "") -> str:
    """json_extract of `path` in the body (of `table`'s row), named `alias`."""
    column = f"{table}.data" if table else "data"
    return f"json_extract({column}, '$.{path}')" + (f" AS {alias}" if alias else "")


def _pairs(path: str, table: str = "e") -> str:
    """An object in the body (a config, a candidate's changes) as a person reads it, in its
    order, the unset keys left out: `key=value`, or `key from->to` for a change (a [from, to]
    pair), as `selfheal show` spells it; where the raw JSON was one long line."""
    def atom(value: str) -> str:  # JSON's true/false, which SQLite's json functions give as 1/0
        return (f"CASE json_type({value}) WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' "
                f"ELSE json_extract({value}) END")
    before, after = atom("value, '$[0]'"), atom("value, '$[1]'")
    single = "CASE type WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' ELSE value END"
    return (f"(SELECT group_concat(CASE type WHEN 'array' THEN key || ' ' || {before} || '->' || {after} "
            f"ELSE key || '=' || {single} END, ' ') FROM json_each({table}.data, '$.{path}') WHERE type != 'null')")


#: one line per event of a run, as `selfheal show` would say it (shortened)
_DETAIL = f"""CASE e.type
    WHEN 'RunRequested' THEN 'requested in ' || {_j('mode', table='e')} || ' mode'
    WHEN 'RunRefused' THEN 'refused: ' || {_j('reason', table='e')}
    WHEN 'RunStarted' THEN 'started from ' || {_pairs('current')}
    WHEN 'CandidateProposed' THEN {_j('origin', table='e')} || ' #' || {_j('rank', table='e')} || ': '
        || {_pairs('changes')}
        || COALESCE(', predicted fitness ' || {_j('predicted', table='e')}, '')
    WHEN 'PreflightPassed' THEN 'pre-flight ok: needs ' || round({_j('required_bytes', table='e')} / 1073741824.0, 2)
        || ' GiB of ' || round({_j('free_bytes', table='e')} / 1073741824.0, 2) || ' GiB free'
    WHEN 'PreflightRejected' THEN 'pre-flight rejected: ' || {_j('reason', table='e')}
    WHEN 'CanaryStarted' THEN 'canary on ' || {_j('backend', table='e')}
        || CASE {_j('simulated', table='e')} WHEN 1 THEN ' (simulated)' ELSE '' END
    WHEN 'CanaryCompleted' THEN
        CASE WHEN {_j('measurements.started', table='e')} = 0
             THEN 'failed at ' || {_j('measurements.failure_stage', table='e')} || ': '
                  || {_j('measurements.failure_kind', table='e')}
             WHEN {_j('measurements.passed_load', table='e')} = 0
             THEN 'failed under load: ' || {_j('measurements.failure_kind', table='e')}
             ELSE 'passed: ' || {_j('measurements.kv_cache_tokens', table='e')} || ' KV tokens, '
                  || {_j('measurements.throughput_tok_s', table='e')} || ' tok/s' END
        || ' after ' || {_j('measurements.duration_s', table='e')} || ' s'
    WHEN 'CandidateScored' THEN CASE {_j('passed', table='e')} WHEN 1 THEN 'passed, fitness ' || {_j('fitness', table='e')}
        ELSE 'failed: ' || {_j('reason', table='e')} END
    WHEN 'PromotionProposed' THEN 'promotion ' || substr({_j('promotion_id', table='e')}, 1, 8) || ', fitness '
        || {_j('fitness', table='e')}
        || CASE {_j('requires_approval', table='e')} WHEN 1 THEN ', waits for approval' ELSE '' END
    WHEN 'RunFinished' THEN {_j('outcome', table='e')} || ' after ' || {_j('canaries', table='e')}
        || CASE {_j('canaries', table='e')} WHEN 1 THEN ' canary' ELSE ' canaries' END
    WHEN 'EscalationRaised' THEN 'escalated: ' || {_j('reason', table='e')}
    WHEN 'IncidentCaptured' THEN 'incident from ' || {_j('source.kind', table='e')}
    WHEN 'ObservationMade' THEN 'finding: ' || {_j('finding.kind', table='e')}
    WHEN 'IncidentUnmatched' THEN 'no failure found (rules ' || {_j('rules_version', table='e')} || ')'
    WHEN 'IntentArchived' THEN 'intent archived: ' || {_j('outcome', table='e')}
    WHEN 'PromotionApproved' THEN 'approved by ' || {_j('by', table='e')}
    WHEN 'PromotionRejected' THEN 'rejected by ' || {_j('by', table='e')}
    WHEN 'PromotionLapsed' THEN 'lapsed: ' || {_j('reason', table='e')}
    WHEN 'PromotionNotCommitted' THEN 'not committed: ' || {_j('reason', table='e')}
    WHEN 'BaselineCommitted' THEN 'baseline v' || {_j('version', table='e')} || ' written to ' || {_j('path', table='e')}
    WHEN 'VerificationFinished' THEN CASE {_j('healthy', table='e')} WHEN 1 THEN 'healthy after ' ELSE 'unhealthy after ' END
        || {_j('purpose', table='e')}
    WHEN 'RolledBack' THEN 'rolled back to v' || {_j('restored_version', table='e')}
    ELSE NULL END"""

# A run's events: its incident's chain (one correlation id) from the run's request on, without
# the events another run of the same chain recorded; events without a run id (a promotion's
# approval, its commit) belong to the last run requested before them.
RUN_TIMELINE = f"""
WITH runs AS (
    SELECT {_j('run_id', 'run_id')}, {_j('deployment', 'deployment')}, correlation_id, position AS first_position,
           LEAD(position) OVER (PARTITION BY correlation_id ORDER BY position) AS next_run_position
    FROM events WHERE type = 'RunRequested'
)
SELECT r.run_id, r.deployment, e.position, e.occurred_at, e.recorded_at, e.type,
       {_j('candidate_id', 'candidate_id', 'e')}, {_j('canary_id', 'canary_id', 'e')},
       {_DETAIL} AS detail,
       e.stream, e.event_id, e.causation_id, e.data
FROM runs r JOIN events e ON e.correlation_id = r.correlation_id AND e.position >= r.first_position
WHERE {_j('run_id', table='e')} = r.run_id
   OR ({_j('run_id', table='e')} IS NULL
       AND (r.next_run_position IS NULL OR e.position < r.next_run_position))
"""

CANDIDATES = f"""
WITH proposed AS (
    SELECT position, occurred_at, {_j('run_id', 'run_id')}, {_j('deployment', 'deployment')},
           {_j('candidate_id', 'candidate_id')}, {_j('rank', 'rank')}, {_j('origin', 'origin')},
           {_j('changes', 'changes')}, {_j('config', 'config')}, {_j('predicted', 'predicted')}
    FROM events WHERE type = 'CandidateProposed'
), preflight AS (
    SELECT {_j('candidate_id', 'candidate_id')},
           CASE type WHEN 'PreflightPassed' THEN 'passed' ELSE 'rejected' END AS preflight,
           {_j('reason', 'preflight_reason')}, {_j('required_bytes', 'required_bytes')}, {_j('free_bytes', 'free_bytes')}
    FROM events WHERE type IN ('PreflightPassed', 'PreflightRejected') LIMIT -1
), canary AS (
    SELECT {_j('candidate_id', 'candidate_id')}, {_j('canary_id', 'canary_id')}, {_j('backend', 'backend')},
           {_j('simulated', 'simulated')}, {_j('measurements', 'm')}, {_j('log_incident_id', 'log_incident_id')}
    FROM events WHERE type = 'CanaryCompleted' LIMIT -1
), scored AS (
    SELECT {_j('candidate_id', 'candidate_id')}, {_j('passed', 'passed')}, {_j('fitness', 'fitness')},
           {_j('reason', 'score_reason')}
    FROM events WHERE type = 'CandidateScored' LIMIT -1
), promoted AS (
    SELECT {_j('candidate_id', 'candidate_id')}, {_j('promotion_id', 'promotion_id')}
    FROM events WHERE type = 'PromotionProposed' LIMIT -1
)
SELECT p.run_id, p.deployment, p.rank, p.origin, p.candidate_id, p.changes, p.config,
       p.predicted AS predicted_fitness, f.preflight, f.preflight_reason,
       round(f.required_bytes / 1073741824.0, 3) AS required_gib, round(f.free_bytes / 1073741824.0, 3) AS free_gib,
       c.canary_id, c.backend, c.simulated,
       json_extract(c.m, '$.started') AS started, json_extract(c.m, '$.passed_load') AS passed_load,
       json_extract(c.m, '$.failure_stage') AS failure_stage, json_extract(c.m, '$.failure_kind') AS failure_kind,
       json_extract(c.m, '$.duration_s') AS duration_s, json_extract(c.m, '$.kv_cache_tokens') AS kv_cache_tokens,
       json_extract(c.m, '$.max_concurrency') AS max_concurrency,
       json_extract(c.m, '$.throughput_tok_s') AS throughput_tok_s,
       json_extract(c.m, '$.latency_p99_ms') AS latency_p99_ms, json_extract(c.m, '$.preemptions') AS preemptions,
       json_extract(c.m, '$.peak_memory_gib') AS peak_memory_gib,
       json_extract(c.m, '$.gpu_headroom_gib') AS gpu_headroom_gib,
       json_extract(c.m, '$.excerpt') AS failure_excerpt,
       s.passed, s.fitness, s.score_reason, pr.promotion_id, pr.promotion_id IS NOT NULL AS promoted,
       c.log_incident_id, p.position, p.occurred_at
FROM proposed p
LEFT JOIN preflight f ON f.candidate_id = p.candidate_id
LEFT JOIN canary c ON c.candidate_id = p.candidate_id
LEFT JOIN scored s ON s.candidate_id = p.candidate_id
LEFT JOIN promoted pr ON pr.candidate_id = p.candidate_id
"""

# What the search predicted of each candidate that ran, beside what its canary measured:
# fitness (the tournament's prediction; the seed has none) and memory (pre-flight's requirement,
# the GPU memory vLLM will reserve, against the canary's peak)
PREDICTED_VS_MEASURED = """
SELECT run_id, deployment, rank, origin, candidate_id, changes,
       predicted_fitness, fitness AS measured_fitness, round(fitness - predicted_fitness, 3) AS fitness_error,
       required_gib AS predicted_gib, peak_memory_gib AS measured_peak_gib,
       round(peak_memory_gib - required_gib, 3) AS memory_error_gib,
       passed, failure_kind, simulated, position
FROM candidates WHERE canary_id IS NOT NULL
"""

ALERTS = f"""
WITH raised AS (
    SELECT position, occurred_at, {_j('alert_id', 'alert_id')}, {_j('deployment', 'deployment')}, {_j('kind', 'kind')},
           {_j('summary', 'summary')}, {_j('evidence', 'evidence')}, correlation_id
    FROM events WHERE type = 'AlertRaised'
), delivered AS (
    SELECT {_j('alert_id', 'alert_id')}, {_j('sink', 'sink')}, {_j('ok', 'ok')}, {_j('detail', 'detail')}
    FROM events WHERE type = 'AlertDelivered' LIMIT -1
)
SELECT r.alert_id, r.deployment, r.kind, r.summary, r.occurred_at, count(d.alert_id) AS deliveries,
       COALESCE(sum(d.ok), 0) AS delivered,
       group_concat(d.sink || CASE d.ok WHEN 1 THEN ': delivered' ELSE ': failed ' || COALESCE(d.detail, '') END,
                    '; ') AS sinks,
       r.evidence, r.correlation_id, r.position
FROM raised r LEFT JOIN delivered d ON d.alert_id = r.alert_id
GROUP BY r.position
"""

# An incident's text with its line breaks (the JSON body shows them as \\n), and what was found in it
INCIDENTS = f"""
WITH captured AS (
    SELECT position, occurred_at, {_j('incident_id', 'incident_id')}, {_j('deployment', 'deployment')},
           {_j('source.kind', 'source')}, {_j('source.canary_id', 'canary_id')}, {_j('raw_text', 'raw_text')},
           correlation_id
    FROM events WHERE type = 'IncidentCaptured'
), found AS (
    SELECT {_j('incident_id', 'incident_id')}, {_j('finding.kind', 'finding')},
           {_j('finding.confidence', 'confidence')}, {_j('finding.rule', 'rule')}
    FROM events WHERE type = 'ObservationMade' LIMIT -1
), unmatched AS (
    SELECT {_j('incident_id', 'incident_id')} FROM events WHERE type = 'IncidentUnmatched' LIMIT -1
)
SELECT c.incident_id, c.deployment, c.source, c.canary_id,
       COALESCE(f.finding, CASE WHEN u.incident_id IS NOT NULL THEN 'none' END) AS finding,
       f.confidence, f.rule, c.raw_text, c.occurred_at, c.correlation_id, c.position
FROM captured c
LEFT JOIN found f ON f.incident_id = c.incident_id
LEFT JOIN unmatched u ON u.incident_id = c.incident_id
"""

#: name -> SELECT, in the order they are created (candidates before the view that reads it)
VIEWS = {
    "run_timeline": RUN_TIMELINE,
    "candidates": CANDIDATES,
    "predicted_vs_measured": PREDICTED_VS_MEASURED,
    "alerts": ALERTS,
    "incidents": INCIDENTS,
}


def view_sql(name: str) -> str:
    """The statement that creates view `name`, as sqlite_master keeps it."""
    return f"CREATE VIEW {name} AS {VIEWS[name].strip()}"


def stale_views(stored: dict[str, str | None], normal) -> list[str]:
    """The views whose stored SQL (name -> sqlite_master.sql) is missing or not this module's;
    `normal` compares SQL without spacing (eventstore.sqlite.normal_sql)."""
    return [name for name in VIEWS if normal(stored.get(name) or "") != normal(view_sql(name))]


def replace_views(conn: sqlite3.Connection) -> None:
    """Drop and create every view, inside the caller's write transaction. Dropping first, all of
    them, because a view may read another one (predicted_vs_measured reads candidates)."""
    for name in reversed(list(VIEWS)):
        conn.execute(f"DROP VIEW IF EXISTS {name}")
    for name in VIEWS:
        conn.execute(view_sql(name))
