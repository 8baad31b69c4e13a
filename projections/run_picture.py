"""A run as a picture: one row per candidate, its canary as a bar on the run's time axis, the
outcome and fitness beside it, the promoted candidate marked (`selfheal show RUN --svg FILE`).

A pure function of the run's events, like a projection: no clock, no file, no randomness, so the
same events always draw the same bytes (a committed picture can be checked against its log).

Time: canaries run one after another, so a canary starts where the one before it ended, or
later when its CanaryStarted says so (a real run: pre-flight, or the wait for a GPU, between
them). A simulated canary's events are all recorded at one instant and its time is the
simulated `duration_s` of its measurements, so the axis is the canaries' own time either way.

Phases: a canary that failed at startup (or in its config) spent its whole time starting; one
that started spent it starting and then under load. The log records only the total
(`CanaryMeasurements.duration_s`), not where startup ended, so a started canary's bar is one
"startup + load" phase: the picture says what the log knows and no more.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from xml.sax.saxutils import escape, quoteattr

import msgspec

from selfheal.eventstore.store import Recorded


class Phase(msgspec.Struct, frozen=True):
    name: str            # "startup" or "startup + load"
    start_s: float       # from the run's start
    duration_s: float
    failed: bool


class Row(msgspec.Struct):
    rank: int
    origin: str
    candidate_id: str
    changes: str
    predicted: float | None = None
    phases: list[Phase] = []
    outcome: str = "pending"   # passed | failed | rejected | pending
    detail: str = ""           # why it failed, or what it measured
    fitness: float | None = None
    promoted: bool = False


class RunPicture(msgspec.Struct):
    run_id: str
    deployment: str = ""
    outcome: str = "running"
    current: str = ""
    simulated: bool = False
    rows: list[Row] = []
    total_s: float = 0.0
    promotion: str = ""        # what became of the promotion (committed, waiting, not committed)


def _changes(changes: dict) -> str:
    return ", ".join(f"{k} {old}\u2192{new}" for k, (old, new) in changes.items()) or "no change"


def _config(c) -> str:
    return (f"util={c.gpu_memory_utilization:g} max_model_len={c.max_model_len} max_num_seqs={c.max_num_seqs} "
            f"max_num_batched_tokens={c.max_num_batched_tokens}" + (" enforce_eager" if c.enforce_eager else ""))


_SETTLED = {"PromotionNotCommitted": "not committed", "PromotionRejected": "rejected", "PromotionLapsed": "lapsed"}


def picture(run_id: str, events: Iterable[Recorded]) -> RunPicture:
    """The picture of run `run_id` from its events (any others given are ignored), in log order."""
    pic = RunPicture(run_id=run_id)
    rows: dict[str, Row] = {}
    t0 = None
    cursor = 0.0
    started: dict[str, float] = {}
    promotion_id, commits = None, set()
    for r in sorted(events, key=lambda r: r.position):
        e, t = r.event, r.type
        of_run = getattr(e, "run_id", None)
        if of_run is None:  # an event without a run id counts only as this run's promotion's, or its commit's
            if promotion_id is None or not (getattr(e, "promotion_id", None) == promotion_id
                                            or getattr(e, "commit_id", None) in commits):
                continue
        elif of_run != run_id:
            continue
        if t == "RunStarted":
            t0 = r.occurred
            pic.deployment, pic.current, pic.outcome = e.deployment, _config(e.current), "running"
        elif t == "RunRefused":
            pic.deployment, pic.outcome = e.deployment, f"refused: {e.reason}"
        elif t == "CandidateProposed":
            rows[e.candidate_id] = Row(rank=e.rank, origin=e.origin, candidate_id=e.candidate_id,
                                       changes=_changes(e.changes), predicted=e.predicted)
        elif t == "PreflightRejected" and e.candidate_id in rows:
            rows[e.candidate_id].outcome, rows[e.candidate_id].detail = "rejected", f"pre-flight: {e.reason}"
        elif t == "CanaryStarted":
            offset = (r.occurred - t0).total_seconds() if t0 is not None else 0.0
            started[e.candidate_id] = max(cursor, offset)
            pic.simulated = pic.simulated or e.simulated
        elif t == "CanaryCompleted" and e.candidate_id in rows:
            m = e.measurements
            start = started.get(e.candidate_id, cursor)
            cursor = start + m.duration_s
            row = rows[e.candidate_id]
            if not m.started:
                row.phases = [Phase("startup", start, m.duration_s, True)]
                row.detail = f"failed at {m.failure_stage or 'startup'}: {m.failure_kind}"
            else:
                row.phases = [Phase("startup + load", start, m.duration_s, not m.passed_load)]
                row.detail = (f"failed under load: {m.failure_kind}" if not m.passed_load else
                              f"{m.kv_cache_tokens:,} KV tokens, {m.throughput_tok_s:.0f} tok/s")
        elif t == "CandidateScored" and e.candidate_id in rows:
            row = rows[e.candidate_id]
            row.outcome, row.fitness = ("passed" if e.passed else "failed"), e.fitness
            if not e.passed and not row.detail:
                row.detail = e.reason
        elif t == "PromotionProposed":
            promotion_id = e.promotion_id
            if e.candidate_id in rows:
                rows[e.candidate_id].promoted = True
            pic.promotion = f"promotion {e.promotion_id[:8]}: " + ("waits for approval" if e.requires_approval
                                                                  else "proposed")
        elif t == "RunFinished":
            pic.outcome = f"{e.outcome} after {e.canaries} canar{'y' if e.canaries == 1 else 'ies'}"
        elif t in _SETTLED:
            why = getattr(e, "reason", "") or f"by {e.by}"
            pic.promotion = f"promotion {promotion_id[:8]}: {_SETTLED[t]}: {why}"
        elif t == "PromotionApproved":
            pic.promotion = f"promotion {promotion_id[:8]}: approved by {e.by}"
        elif t == "BaselineCommitStarted":
            commits.add(e.commit_id)
        elif t == "BaselineCommitted":
            pic.promotion = f"promotion {promotion_id[:8]}: committed as baseline v{e.version}"
        elif t == "RolledBack":
            pic.promotion = f"promotion {promotion_id[:8]}: rolled back to v{e.restored_version}: {e.reason}"
    pic.rows = sorted(rows.values(), key=lambda row: row.rank)
    pic.total_s = max([p.start_s + p.duration_s for row in pic.rows for p in row.phases], default=0.0)
    return pic


# -- drawing ------------------------------------------------------------------------------------

WIDTH = 1000
LEFT, BARS, RIGHT = 16, 340, 700     # x of the labels, of the bars' zero, of the outcome column
ROW_H, TOP = 46, 92
COLOURS = {"passed": "#2e7d32", "failed": "#c62828", "rejected": "#757575", "pending": "#9e9e9e"}


def _step(total: float) -> float:
    """A round tick step giving 4-8 ticks over `total` seconds."""
    if total <= 0:
        return 1.0
    raw = total / 6
    base = 10 ** math.floor(math.log10(raw))
    return next(m * base for m in (1, 2, 5, 10) if m * base >= raw)


def _text(x: float, y: float, s: str, cls: str, **attrs) -> str:
    extra = "".join(f" {k.replace('_', '-')}={quoteattr(str(v))}" for k, v in attrs.items())
    return f'<text x="{x:g}" y="{y:g}" class="{cls}"{extra}>{escape(s)}</text>'


def svg(pic: RunPicture) -> str:
    """The picture as a standalone SVG document (no script, no external reference)."""
    height = TOP + ROW_H * max(1, len(pic.rows)) + 56
    scale = (RIGHT - 20 - BARS) / pic.total_s if pic.total_s > 0 else 0.0
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="DejaVu Sans, Verdana, sans-serif" font-size="12">',
        "<style>.title{font-size:16px;font-weight:bold}.sub,.changes,.axis,.note{fill:#555}"
        ".changes,.axis{font-size:11px}.label{font-weight:bold}.phase-label{fill:#fff;font-size:11px}"
        ".passed{fill:#2e7d32}.failed{fill:#c62828}.rejected,.pending{fill:#757575}</style>",
        f'<rect width="{WIDTH}" height="{height}" fill="#fff"/>',
        _text(LEFT, 24, f"run {pic.run_id[:8]} \u00b7 {pic.deployment} \u00b7 {pic.outcome}", "title"),
        _text(LEFT, 44, f"from {pic.current}" + (" \u00b7 simulated canaries" if pic.simulated else ""), "sub"),
    ]
    axis_y = TOP - 16
    if pic.total_s > 0:
        step = _step(pic.total_s)
        ticks = int(pic.total_s // step) + 1
        out.append(f'<line x1="{BARS}" y1="{axis_y}" x2="{RIGHT - 20}" y2="{axis_y}" stroke="#999"/>')
        for i in range(ticks):
            x = BARS + i * step * scale
            out.append(f'<line x1="{x:.1f}" y1="{axis_y - 3}" x2="{x:.1f}" y2="{height - 50}" stroke="#eee"/>')
            out.append(_text(round(x, 1), axis_y - 6, f"{i * step:g} s", "axis", text_anchor="middle"))
    for i, row in enumerate(pic.rows):
        y = TOP + i * ROW_H
        attrs = (f'class="candidate{" promoted" if row.promoted else ""}" data-rank="{row.rank}" '
                 f'data-outcome="{row.outcome}" data-candidate={quoteattr(row.candidate_id)}')
        out.append(f"<g {attrs}>")
        if row.promoted:
            out.append(f'<rect class="promotion-mark" x="4" y="{y - 4}" width="{WIDTH - 8}" height="{ROW_H - 4}" '
                       f'rx="6" fill="#e8f5e9" stroke="#2e7d32" stroke-width="2"/>')
        out.append(_text(LEFT, y + 13, f"#{row.rank} {row.origin}", "label"))
        out.append(_text(LEFT, y + 30, row.changes, "changes"))
        for p in row.phases:
            x, w = BARS + p.start_s * scale, max(2.0, p.duration_s * scale)
            colour = COLOURS["failed" if p.failed else "passed"]
            out.append(f'<rect class="phase" data-phase={quoteattr(p.name)} data-seconds="{p.duration_s:g}" '
                       f'x="{x:.1f}" y="{y + 2}" width="{w:.1f}" height="22" rx="3" fill="{colour}">'
                       f"<title>{escape(p.name)}: {p.duration_s:g} s</title></rect>")
            out.append(_text(round(x + 4, 1), y + 17, f"{p.name} {p.duration_s:.0f} s", "phase-label"))
        if not row.phases:
            out.append(_text(BARS, y + 17, "no canary" if row.outcome == "rejected" else "no result recorded", "note"))
        verdict = {"passed": "passed", "failed": "failed", "rejected": "rejected", "pending": "pending"}[row.outcome]
        if row.fitness is not None:
            verdict += f" \u00b7 fitness {row.fitness:g}"
        if row.promoted:
            verdict = "\u2605 promoted \u00b7 " + verdict
        out.append(_text(RIGHT, y + 13, verdict, f"outcome {row.outcome}"))
        predicted = f"predicted {row.predicted:g} \u00b7 " if row.predicted is not None else ""
        out.append(_text(RIGHT, y + 30, predicted + row.detail, "changes"))
        out.append("</g>")
    if not pic.rows:
        out.append(_text(LEFT, TOP + 17, "no candidates recorded", "note"))
    legend_y = height - 30
    out.append(_text(LEFT, legend_y, pic.promotion or "no promotion", "note"))
    out.append(f'<rect x="{RIGHT}" y="{legend_y - 10}" width="12" height="12" fill="{COLOURS["passed"]}"/>')
    out.append(_text(RIGHT + 16, legend_y, "passed", "note"))
    out.append(f'<rect x="{RIGHT + 70}" y="{legend_y - 10}" width="12" height="12" fill="{COLOURS["failed"]}"/>')
    out.append(_text(RIGHT + 86, legend_y, "failed (bar: canary time)", "note"))
    out.append("</svg>")
    return "\n".join(out) + "\n"
