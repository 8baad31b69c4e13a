"""Runtime symptoms from vLLM's Prometheus ``/metrics``: scrape, parse, and say when one is sustained.

A server that started can still be misconfigured for its load. Four symptoms are watched, each
reported once when it becomes sustained (and again only after it has cleared):

- preemptions: ``vllm:num_preemptions_total`` rose faster than `preemption_rate` per second over
  the last `window_s` seconds (measured from the newest scrape at least `window_s` old, so a
  verdict always covers a whole window). A counter that goes down means the server restarted:
  the history starts again. Default 0.1/s: 30 preemptions in 5 minutes is no accident of one
  long prompt, it is a KV cache too small for the admitted concurrency;
- KV cache pressure: ``vllm:kv_cache_usage_perc`` (before vLLM 0.10: ``vllm:gpu_cache_usage_perc``;
  a fraction 0..1 despite its name) at or above `kv_usage_threshold` on `sustain_scrapes`
  scrapes in a row. With several engines (data parallel) the fullest one counts;
- request refusals: ``http_requests_total{status="4xx"}`` of the completion routes
  (``/v1/completions``, ``/v1/chat/completions``; prometheus-fastapi-instrumentator's counter,
  which vLLM's API server exposes beside its own) rose faster than `refusal_rate` per second over
  the last `window_s` seconds, measured like preemptions. vLLM refuses a prompt longer than
  max_model_len with HTTP 400 and logs nothing but the access line, so this counter is where
  sustained refusals show. Default 0.01/s: more than 3 in 5 minutes, as the log rule's 3;
- queue growth: ``vllm:num_requests_waiting`` rose on every scrape of the window (at least
  `sustain_scrapes` of them) and by at least `queue_growth` requests in all.

A symptom becomes a single line, the incident's raw text, in this fixed wording (the observer's
rules in `handlers/observer/rules.py` read exactly these; change both together)::

    selfheal metrics: sustained preemptions: vllm:num_preemptions_total rose by 57 in 300 s (0.19/s, threshold 0.1/s); state: running=16 waiting=3 kv_cache_usage=0.992
    selfheal metrics: sustained KV cache pressure: vllm:kv_cache_usage_perc at or above 0.98 on 3 scrapes in a row over 30 s (last 0.992); state: running=16 waiting=3 kv_cache_usage=0.992
    selfheal metrics: sustained request refusals: http_requests_total{status="4xx"} of /v1/completions and /v1/chat/completions rose by 12 in 300 s (0.04/s, threshold 0.01/s); state: running=4 waiting=0 kv_cache_usage=0.310
    selfheal metrics: sustained queue growth: vllm:num_requests_waiting rose on each of 20 scrapes, from 3 to 41 in 300 s; state: running=16 waiting=41 kv_cache_usage=0.450

The ``state:`` fields come from the latest scrape; a field whose metric was absent is left out.
Numbers are printed without exponents. Counters and request counts are summed over label sets
(engines), the KV usage is the maximum.
"""
from __future__ import annotations

import http.client
import logging
import math
import re
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Iterator

import msgspec

log = logging.getLogger(__name__)

PREEMPTIONS = "vllm:num_preemptions_total"
KV_USAGE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")  # newest name first
RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
HTTP_REQUESTS = "http_requests_total"
#: the routes whose refusals are counted: a 4xx elsewhere (/v1/models, /tokenize) refuses no prompt
COMPLETION_ROUTES = ("/v1/completions", "/v1/chat/completions")
PREFIX = "selfheal metrics: "

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def iter_samples(text: str) -> Iterator[tuple[str, str, float]]:
    """(metric name, label text, value) of every sample line of an exposition; malformed lines are skipped."""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _NAME.match(line)
        if m is None:
            continue
        pos, labels = m.end(), ""
        if pos < len(line) and line[pos] == "{":
            end = _labels_end(line, pos)
            if end < 0:
                continue
            labels, pos = line[pos + 1:end], end + 1
        fields = line[pos:].split()
        if not fields or (pos < len(line) and not line[pos].isspace()):
            continue
        try:
            value = float(fields[0])  # accepts NaN, +Inf, -Inf, 1.5e-3 as Prometheus writes them
        except ValueError:
            continue
        yield m.group(), labels, value


def _labels_end(line: str, start: int) -> int:
    """Index of the '}' closing the label set opened at `start`, skipping quoted values (with
    their backslash escapes); -1 when it is not closed."""
    quoted = escaped = False
    for i in range(start + 1, len(line)):
        ch = line[i]
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = quoted
        elif ch == '"':
            quoted = not quoted
        elif ch == "}" and not quoted:
            return i
    return -1


def parse_prometheus(text: str) -> dict[str, float]:
    """Metric name -> the sum of its values over all label sets."""
    out: dict[str, float] = {}
    for name, _, value in iter_samples(text):
        out[name] = out.get(name, 0.0) + value
    return out


def _num(x: float) -> str:
    """A number as the observer's {num} / {int} read it: no exponent, no trailing zeros."""
    if float(x).is_integer():
        return str(int(x))
    return f"{x:.4f}".rstrip("0").rstrip(".")


_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def _labels(text: str) -> dict[str, str]:
    return {k: v for k, v in _LABEL.findall(text)}


class Scrape(msgspec.Struct, frozen=True):
    """What the watch reads of one scrape; None: the metric was absent. A producer that has the
    numbers already (the simulator judging a canary) feeds this instead of exposition text."""
    t: float
    preemptions: float | None = None
    waiting: float | None = None
    running: float | None = None
    kv: float | None = None
    kv_name: str = "vllm:kv_cache_usage_perc"
    refused: float | None = None      # 4xx responses of the completion routes, cumulative




class MetricsWatch:
    """Feed it successive scrapes; it returns a symptom text when one becomes sustained."""

    def __init__(self, window_s: float = 300.0, preemption_rate: float = 0.1, kv_usage_threshold: float = 0.98,
                 sustain_scrapes: int = 3, queue_growth: float = 10.0, refusal_rate: float = 0.01):
        if window_s <= 0 or preemption_rate <= 0 or refusal_rate <= 0 or sustain_scrapes < 1:
            raise ValueError("window_s, preemption_rate and refusal_rate must be > 0, sustain_scrapes >= 1")
        self.window_s = window_s
        self.preemption_rate = preemption_rate
        self.refusal_rate = refusal_rate
        self.kv_usage_threshold = kv_usage_threshold
        self.sustain_scrapes = sustain_scrapes
        self.queue_growth = queue_growth
        self._history: deque[Scrape] = deque()
        self._kv_streak = 0                 # scrapes in a row at or above the KV threshold
        self._kv_since = 0.0                # time of the first of them
        self._reported: set[str] = set()

    def feed(self, text: str, now: float) -> str | None:
        """One scrape's body at monotonic time `now`. When several symptoms become sustained at
        once, the first (preemptions, KV, refusals, queue) is returned and the next on a later scrape."""
        return self.feed_scrape(self._read(text, now))

    def feed_scrape(self, s: Scrape) -> str | None:
        """`feed` for a scrape already read: the same verdicts, without the text."""
        now = s.t
        last = self._history[-1] if self._history else None
        if last is not None and (now < last.t or _went_down(last.preemptions, s.preemptions)
                                 or _went_down(last.refused, s.refused)):
            self._history.clear()  # clock went back or the counter reset: the server restarted
            self._kv_streak = 0
        self._history.append(s)
        base = self._baseline(now)
        if s.kv is not None and s.kv >= self.kv_usage_threshold:
            self._kv_since = now if self._kv_streak == 0 else self._kv_since
            self._kv_streak += 1
        else:
            self._kv_streak = 0
        found = None
        for kind, text_ in (("preemptions", self._preemptions(base, s)), ("kv", self._kv(s)),
                            ("refusals", self._refusals(base, s)), ("queue", self._queue(base, s))):
            if text_ is None:
                self._reported.discard(kind)  # cleared: report again if it comes back
            elif kind not in self._reported and found is None:
                self._reported.add(kind)
                found = text_
        return found

    def _read(self, text: str, now: float) -> Scrape:
        sums: dict[str, float] = {}
        kv: dict[str, float] = {}
        for name, labels, value in iter_samples(text):
            if math.isnan(value):
                continue
            if name == HTTP_REQUESTS:
                found = _labels(labels)
                if found.get("status") == "4xx" and found.get("handler") in COMPLETION_ROUTES:
                    sums[name] = sums.get(name, 0.0) + value
                elif name not in sums:
                    sums[name] = 0.0      # the counter is exposed: no 4xx yet is a count of 0
            elif name in KV_USAGE:
                kv[name] = max(kv.get(name, -math.inf), value)
            elif name in (PREEMPTIONS, RUNNING, WAITING):
                sums[name] = sums.get(name, 0.0) + value
        kv_name = next((n for n in KV_USAGE if n in kv), KV_USAGE[0])
        return Scrape(now, sums.get(PREEMPTIONS), sums.get(WAITING), sums.get(RUNNING), kv.get(kv_name), kv_name,
                      sums.get(HTTP_REQUESTS))

    def _baseline(self, now: float) -> Scrape | None:
        """The newest scrape at least a window old; older ones are dropped."""
        while len(self._history) >= 2 and self._history[1].t <= now - self.window_s:
            self._history.popleft()
        first = self._history[0]
        return first if first.t <= now - self.window_s else None

    def _state(self, s: Scrape) -> str:
        parts = [f"{k}={_num(v) if k != 'kv_cache_usage' else f'{v:.3f}'}"
                 for k, v in (("running", s.running), ("waiting", s.waiting), ("kv_cache_usage", s.kv))
                 if v is not None and math.isfinite(v)]
        return "; state: " + " ".join(parts) if parts else ""

    def _rising(self, base: Scrape | None, s: Scrape, field: str, threshold: float, what: str) -> str | None:
        """`what` rose by ..., when the counter `field` rose faster than `threshold` per second
        since the window's baseline."""
        before, now = (getattr(base, field), getattr(s, field)) if base is not None else (None, None)
        if before is None or now is None or s.t <= base.t:
            return None
        rise, span = now - before, s.t - base.t
        rate = rise / span
        if not (math.isfinite(rate) and rate > threshold):
            return None
        return (f"{PREFIX}{what} rose by {_num(round(rise))} in {_num(round(span))} s "
                f"({_num(round(rate, 3))}/s, threshold {_num(threshold)}/s){self._state(s)}")

    def _preemptions(self, base: Scrape | None, s: Scrape) -> str | None:
        return self._rising(base, s, "preemptions", self.preemption_rate, f"sustained preemptions: {PREEMPTIONS}")

    def _kv(self, s: Scrape) -> str | None:
        if self._kv_streak < self.sustain_scrapes:
            return None
        span = s.t - self._kv_since
        return (f"{PREFIX}sustained KV cache pressure: {s.kv_name} at or above {_num(self.kv_usage_threshold)} "
                f"on {self._kv_streak} scrapes in a row over {_num(round(span))} s (last {s.kv:.3f}){self._state(s)}")

    def _refusals(self, base: Scrape | None, s: Scrape) -> str | None:
        routes = " and ".join(COMPLETION_ROUTES)
        return self._rising(base, s, "refused", self.refusal_rate,
                            f'sustained request refusals: {HTTP_REQUESTS}{{status="4xx"}} of {routes}')

    def _queue(self, base: Scrape | None, s: Scrape) -> str | None:
        if base is None:
            return None
        values = [x.waiting for x in self._history]  # the baseline is the first entry
        if any(v is None for v in values) or len(values) - 1 < self.sustain_scrapes:
            return None
        if any(b <= a for a, b in zip(values, values[1:])) or values[-1] - values[0] < self.queue_growth:
            return None
        return (f"{PREFIX}sustained queue growth: {WAITING} rose on each of {len(values) - 1} scrapes, from "
                f"{_num(values[0])} to {_num(values[-1])} in {_num(round(s.t - base.t))} s{self._state(s)}")


def _went_down(before: float | None, after: float | None) -> bool:
    return before is not None and after is not None and after < before


class PollStats:
    """What `poll` did so far: readable while it runs (for progress output and tests)."""

    def __init__(self) -> None:
        self.scrapes = 0
        self.failures = 0
        self.last_error = ""



def scrape_error(exc: BaseException, timeout_s: float) -> str:
    """Why a scrape failed, in words rather than Python's exception names ("connection refused",
    "HTTP 503 Service Unavailable", "no answer within 5 s")."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, TimeoutError) or "timed out" in str(reason):
        return f"no answer within {timeout_s:g} s"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror[:1].lower() + reason.strerror[1:]
    return str(reason)

def poll(url: str, *, interval_s: float, stop: threading.Event, timeout_s: float = 5.0,
         stats: PollStats | None = None, max_bytes: int = 64 << 20) -> Iterator[tuple[float, str]]:
    """Scrape `url` every `interval_s` until `stop` is set; yield (time.monotonic(), body).

    A failed scrape (refused, timed out, HTTP error status, body over `max_bytes`) yields
    nothing for that round; it is counted in `stats` and logged, and polling goes on. Proxies
    from the environment are ignored: /metrics is on the serving host, and a corporate proxy
    in http_proxy would otherwise intercept a loopback scrape.
    """
    stats = stats if stats is not None else PollStats()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    while not stop.is_set():
        started = time.monotonic()
        try:
            with opener.open(url, timeout=timeout_s) as resp:
                body = resp.read(max_bytes + 1)
            if len(body) > max_bytes:
                raise ValueError(f"body larger than {max_bytes} bytes")
        except (OSError, ValueError, http.client.HTTPException) as exc:  # URLError/HTTPError are OSErrors
            stats.failures += 1
            stats.last_error = scrape_error(exc, timeout_s)
            log.warning("scrape of %s failed (%d so far): %s", url, stats.failures, stats.last_error)
        else:
            stats.scrapes += 1
            yield time.monotonic(), body.decode("utf-8", "replace")
        stop.wait(max(0.0, interval_s - (time.monotonic() - started)))
