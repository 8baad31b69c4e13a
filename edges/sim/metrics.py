"""The simulated server's /metrics: what vLLM's Prometheus endpoint shows while it serves.

Production serves its workload continuously; the simulator's load phase is one pass of it. So
the scrapes of a simulated deployment repeat that pass back to back: counters (preemptions,
requests, refusals) carry on from one pass to the next, gauges (running, waiting, KV usage)
are those of the stats sample in force at the scrape's time within its pass. A scrape falls on
every stats interval (vLLM's own logging interval, 10 s), for as long as a watcher needs to
judge a symptom sustained.

The same scrapes serve two readers, through edges/metrics_watch.py's MetricsWatch with its
default thresholds:
- `selfheal demo`: the exposition text of each scrape, parsed as a real scrape would be;
- the sim canary's load phase (point 4 of issue 15): the same numbers as `Scrape` values,
  so that a candidate which would show production's symptom at the watcher's threshold fails
  its canary, and a prediction (which renders no text) reaches the same verdict.
"""
from __future__ import annotations

import bisect

from selfheal.edges.metrics_watch import COMPLETION_ROUTES, MetricsWatch, Scrape
from selfheal.edges.sim import logtext as lt
from selfheal.handlers.models.serving import STATS_INTERVAL_S, Load
from selfheal.schemas.failures import FailureKind

#: which failure a symptom line names, by the watcher's wording
SYMPTOM_KINDS: dict[str, FailureKind] = {
    "sustained preemptions:": "preemption_storm",
    "sustained KV cache pressure:": "kv_cache_pressure",
    "sustained request refusals:": "requests_rejected",
    "sustained queue growth:": "queue_growth",
}


def judging_span_s(watch: MetricsWatch) -> float:
    """How long a watcher must see the server to judge every symptom: a whole window after a
    first scrape, and `sustain_scrapes` more scrapes for the streaks."""
    return watch.window_s + (watch.sustain_scrapes + 1) * STATS_INTERVAL_S


class _Pass:
    """One load phase, indexed for scrapes at any time within it."""

    def __init__(self, load: Load):
        self.load = load
        self.period = load.duration_s
        self.sample_t = [x.t for x in load.stats]
        pre, total = [], 0
        for x in load.stats:
            total += x.preemptions
            pre.append(total)
        self.pre_cum = pre
        self.reject_t = sorted(t for t, _ in load.rejections)
        self.finish_t = sorted(t for t, _ in load.finishes)

    def at(self, t: float) -> tuple[int, float, int, int, int]:
        """(pass index, local time, preemptions, refusals, completions) cumulative at time t."""
        k = int(t // self.period)
        local = t - k * self.period
        i = bisect.bisect_right(self.sample_t, local)
        pre = k * self.load.preemptions + (self.pre_cum[i - 1] if i else 0)
        refused = k * self.load.rejected_requests + bisect.bisect_right(self.reject_t, local)
        done = k * self.load.completed + bisect.bisect_right(self.finish_t, local)
        return i, local, pre, refused, done


def scrapes(load: Load, span_s: float) -> list[Scrape]:
    """A scrape every stats interval over `span_s` seconds of production serving its workload
    over and over; empty when the load phase took no time (nothing was served)."""
    if load.duration_s <= 0:
        return []
    p = _Pass(load)
    out = []
    t = STATS_INTERVAL_S
    while t <= span_s + 1e-9:
        i, _, pre, refused, _ = p.at(t)
        sample = load.stats[i - 1] if i else (load.stats[0] if load.stats else None)
        out.append(Scrape(t=t, preemptions=float(pre), refused=float(refused),
                          running=float(sample.running) if sample else None,
                          waiting=float(sample.waiting) if sample else None,
                          kv=sample.kv_usage if sample else None))
        t += STATS_INTERVAL_S
    return out


def exposition(model: str, load: Load, scrape: Scrape) -> str:
    """The /metrics body vLLM would serve at the scrape's time (V1 metric names)."""
    _, _, _, refused, done = _Pass(load).at(scrape.t)
    share = done / load.completed if load.completed else 0.0
    return lt.metrics_text(model, preemptions=int(scrape.preemptions or 0),
                           prompt_tokens=round(load.prompt_tokens * share),
                           generation_tokens=round(load.generation_tokens * share), completed=done,
                           running=scrape.running or 0, waiting=scrape.waiting or 0, kv_usage=scrape.kv or 0.0,
                           refused=refused, routes=COMPLETION_ROUTES)


def symptoms(load: Load, watch: MetricsWatch | None = None, *, model: str | None = None) -> list[str]:
    """The symptom lines a watcher reports over the span it needs, in the order it reports them.
    With `model`, each scrape goes through the watcher as exposition text (the parser's path);
    without, as values (the same verdicts, cheaper: a prediction renders no text)."""
    watch = watch or MetricsWatch()
    found = []
    for s in scrapes(load, judging_span_s(watch)):
        line = watch.feed(exposition(model, load, s), s.t) if model is not None else watch.feed_scrape(s)
        if line:
            found.append(line)
    return found


def symptom_kind(line: str) -> FailureKind | None:
    return next((kind for words, kind in SYMPTOM_KINDS.items() if words in line), None)
