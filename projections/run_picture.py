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

WIDTH = 1000                         # at least; wider when a column's text needs it
LEFT, BARS, RIGHT = 16, 340, 700     # x of the labels, of the bars' zero, of the outcome column (at least)
BARS_W = RIGHT - 20 - BARS           # the time axis' length: the same whatever the columns hold
GAP = 24                             # between a column's longest text and the next column
MAX_COLUMN = 720                     # a longer text is cut with an ellipsis; a tooltip holds it whole
ROW_H, TOP = 46, 92
COLOURS = {"passed": "#2e7d32", "failed": "#c62828", "rejected": "#757575", "pending": "#9e9e9e"}

#: DejaVu Sans advance widths in hundredths of an em, for ' ' to '~' (measured in chromium).
#: The columns are sized from them: a real run's changes (four knobs) or failure
#: ("failed at startup: startup_free_memory_below_utilization") would otherwise run into the
#: bars or past the picture's edge. Verdana, the fallback, is as wide or narrower.
_ADVANCE = {
    False: (32, 40, 46, 84, 64, 95, 78, 27, 39, 39, 50, 84, 32, 36, 32, 34, 64, 64, 64, 64, 64, 64, 64, 64, 64,
            64, 34, 34, 84, 84, 84, 53, 100, 68, 69, 70, 77, 63, 58, 77, 75, 29, 29, 66, 56, 86, 75, 79, 60, 79,
            69, 63, 61, 73, 68, 99, 69, 61, 69, 39, 34, 39, 84, 50, 50, 61, 63, 55, 63, 62, 35, 63, 63, 28, 28,
            58, 28, 97, 63, 61, 63, 63, 41, 52, 39, 63, 59, 82, 59, 59, 52, 64, 34, 64, 84),
    True: (35, 46, 52, 84, 70, 100, 87, 31, 46, 46, 52, 84, 38, 42, 38, 37, 70, 70, 70, 70, 70, 70, 70, 70, 70,
           70, 40, 40, 84, 84, 84, 58, 100, 77, 76, 73, 83, 68, 68, 82, 84, 37, 37, 77, 64, 100, 84, 85, 73, 85,
           77, 72, 68, 81, 77, 110, 77, 72, 73, 46, 37, 46, 84, 50, 50, 67, 72, 59, 72, 68, 44, 72, 71, 34, 34,
           67, 34, 104, 71, 69, 72, 72, 49, 60, 48, 71, 65, 92, 65, 65, 58, 71, 37, 71, 84),
}
_OTHER = {"\u2192": 84, "\u00b7": 32, "\u2605": 90, "\u2026": 100}


def text_width(s: str, size: float, bold: bool = False) -> float:
    """About how wide `s` is drawn at `size` px (a character outside the table counts as 1 em)."""
    table = _ADVANCE[bold]
    return size * sum(table[ord(c) - 32] if 32 <= ord(c) < 127 else _OTHER.get(c, 100) for c in s) / 100


def _fit(s: str, room: float, size: float, bold: bool = False) -> str:
    """`s`, cut with an ellipsis to fit `room` px."""
    if text_width(s, size, bold) <= room:
        return s
    while s and text_width(s + "\u2026", size, bold) > room:
        s = s[:-1]
    return s.rstrip() + "\u2026"


def _step(total: float) -> float:
    """A round tick step giving 4-8 ticks over `total` seconds."""
    if total <= 0:
        return 1.0
    raw = total / 6
    base = 10 ** math.floor(math.log10(raw))
    return next(m * base for m in (1, 2, 5, 10) if m * base >= raw)


def _text(x: float, y: float, s: str, cls: str, *, room: float | None = None, size: float = 12,
          bold: bool = False, **attrs) -> str:
    """A <text>; where `room` is given and `s` does not fit it, cut, with the whole in a tooltip."""
    extra = "".join(f" {k.replace('_', '-')}={quoteattr(str(v))}" for k, v in attrs.items())
    shown = _fit(s, room, size, bold) if room is not None else s
    tip = f"<title>{escape(s)}</title>" if shown != s else ""
    return f'<text x="{x:g}" y="{y:g}" class="{cls}"{extra}>{tip}{escape(shown)}</text>'


def _phase_label(p: Phase, x: float, w: float, y: float, right: float) -> str:
    """The bar's name and time: inside it where it fits, else beside it in the row's free space
    (a 5 s startup failure beside a 600 s canary is a sliver no label fits in)."""
    label = f"{p.name} {p.duration_s:.0f} s"
    need = text_width(label, 11)
    if need + 8 <= w:
        return _text(round(x + 4, 1), y + 17, label, "phase-label")
    if x + w + 4 + need <= right - 8:
        return _text(round(x + w + 4, 1), y + 17, label, "phase-label outside")
    return _text(round(x - 4, 1), y + 17, label, "phase-label outside", text_anchor="end")


def _detail(row: Row) -> str:
    return (f"predicted {row.predicted:g} \u00b7 " if row.predicted is not None else "") + row.detail


def _verdict(row: Row) -> str:
    verdict = row.outcome + (f" \u00b7 fitness {row.fitness:g}" if row.fitness is not None else "")
    return "\u2605 promoted \u00b7 " + verdict if row.promoted else verdict


def svg(pic: RunPicture) -> str:
    """The picture as a standalone SVG document (no script, no external reference). The columns
    are as wide as their longest text (up to MAX_COLUMN px), so nothing overlaps or is cut
    off; the time axis keeps its length."""
    left_w = max([text_width(f"#{r.rank} {r.origin}", 12, True) for r in pic.rows]
                 + [text_width(r.changes, 11) for r in pic.rows], default=0.0)
    bars = max(BARS, math.ceil(LEFT + min(left_w, MAX_COLUMN) + GAP))
    right = bars + BARS_W + 20
    right_w = max([text_width(_verdict(r), 12) for r in pic.rows] + [text_width(_detail(r), 11) for r in pic.rows],
                  default=0.0)
    width = round(max(WIDTH, right + min(right_w, MAX_COLUMN) + LEFT))
    height = TOP + ROW_H * max(1, len(pic.rows)) + 56
    scale = BARS_W / pic.total_s if pic.total_s > 0 else 0.0
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Verdana, sans-serif" font-size="12" '
        f'data-bars="{bars:g}" data-outcomes="{right:g}">',
        "<style>.title{font-size:16px;font-weight:bold}.sub,.changes,.axis,.note{fill:#555}"
        ".changes,.axis{font-size:11px}.label{font-weight:bold}.phase-label{fill:#fff;font-size:11px}"
        ".phase-label.outside{fill:#333}"
        ".passed{fill:#2e7d32}.failed{fill:#c62828}.rejected,.pending{fill:#757575}</style>",
        f'<rect width="{width}" height="{height}" fill="#fff"/>',
        _text(LEFT, 24, f"run {pic.run_id[:8]} \u00b7 {pic.deployment} \u00b7 {pic.outcome}", "title",
              room=width - 2 * LEFT, size=16, bold=True),
        _text(LEFT, 44, f"from {pic.current}" + (" \u00b7 simulated canaries" if pic.simulated else ""), "sub",
              room=width - 2 * LEFT),
    ]
    axis_y = TOP - 16
    if pic.total_s > 0:
        step = _step(pic.total_s)
        ticks = int(pic.total_s // step) + 1
        out.append(f'<line x1="{bars:g}" y1="{axis_y}" x2="{right - 20:g}" y2="{axis_y}" stroke="#999"/>')
        for i in range(ticks):
            x = bars + i * step * scale
            out.append(f'<line x1="{x:.1f}" y1="{axis_y - 3}" x2="{x:.1f}" y2="{height - 50}" stroke="#eee"/>')
            out.append(_text(round(x, 1), axis_y - 6, f"{i * step:g} s", "axis", text_anchor="middle"))
    for i, row in enumerate(pic.rows):
        y = TOP + i * ROW_H
        attrs = (f'class="candidate{" promoted" if row.promoted else ""}" data-rank="{row.rank}" '
                 f'data-outcome="{row.outcome}" data-candidate={quoteattr(row.candidate_id)}')
        out.append(f"<g {attrs}>")
        if row.promoted:
            out.append(f'<rect class="promotion-mark" x="4" y="{y - 4}" width="{width - 8}" height="{ROW_H - 4}" '
                       f'rx="6" fill="#e8f5e9" stroke="#2e7d32" stroke-width="2"/>')
        out.append(_text(LEFT, y + 13, f"#{row.rank} {row.origin}", "label", room=bars - GAP - LEFT, bold=True))
        out.append(_text(LEFT, y + 30, row.changes, "changes", room=bars - GAP - LEFT, size=11))
        for p in row.phases:
            x, w = bars + p.start_s * scale, max(2.0, p.duration_s * scale)
            colour = COLOURS["failed" if p.failed else "passed"]
            out.append(f'<rect class="phase" data-phase={quoteattr(p.name)} data-seconds="{p.duration_s:g}" '
                       f'x="{x:.1f}" y="{y + 2}" width="{w:.1f}" height="22" rx="3" fill="{colour}">'
                       f"<title>{escape(p.name)}: {p.duration_s:g} s</title></rect>")
            out.append(_phase_label(p, x, w, y, right))
        if not row.phases:
            out.append(_text(bars, y + 17, "no canary" if row.outcome == "rejected" else "no result recorded", "note"))
        out.append(_text(right, y + 13, _verdict(row), f"outcome {row.outcome}", room=width - LEFT - right))
        out.append(_text(right, y + 30, _detail(row), "changes", room=width - LEFT - right, size=11))
        out.append("</g>")
    if not pic.rows:
        out.append(_text(LEFT, TOP + 17, "no candidates recorded", "note"))
    legend_y = height - 30
    out.append(_text(LEFT, legend_y, pic.promotion or "no promotion", "note", room=right - GAP - LEFT))
    out.append(f'<rect x="{right:g}" y="{legend_y - 10}" width="12" height="12" fill="{COLOURS["passed"]}"/>')
    out.append(_text(right + 16, legend_y, "passed", "note"))
    out.append(f'<rect x="{right + 70:g}" y="{legend_y - 10}" width="12" height="12" fill="{COLOURS["failed"]}"/>')
    out.append(_text(right + 86, legend_y, "failed (bar: canary time)", "note"))
    out.append("</svg>")
    return "\n".join(out) + "\n"
