"""selfheal's own Prometheus metrics, served with the official client (issue 18.1), and the
follower thread that keeps them, the log lines of each new event and systemd's watchdog current.

One thread owns the store (SQLite connections belong to the thread that made them): every
`interval_s` it reads the events appended since its last look, folds them into the
projections/operator_metrics read model, logs each at INFO with its deployment, run and
incident ids, and reads the handlers' checkpoints. A scrape reads the last such snapshot under
a lock, so it never touches the store and never waits on it. The same port answers /healthz:
systemd's watchdog for a container's HEALTHCHECK or a pod's liveness probe.
"""
from __future__ import annotations

import copy
import logging
import os
import socket
import threading
import time
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from collections.abc import Callable
from datetime import datetime, timezone

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from selfheal.eventstore.store import EventStore, Recorded
from selfheal.handlers.flow import LOOP
from selfheal.projections.operator_metrics import OperatorMetrics, OperatorMetricsProjection

log = logging.getLogger(__name__)
PREFIX = "selfheal"
#: /healthz fails when events have waited this long with no handler moving: one step of the loop
#: can be a whole canary (vLLM's health_timeout_s, 600 s by default, then its load phase), so the
#: default outlasts it, as the systemd unit's WatchdogSec=20min does; $SELFHEAL_HEALTH_STALE_SECONDS
STALE_ENV, STALE_S = "SELFHEAL_HEALTH_STALE_SECONDS", 1200.0
#: ... or when the log has not been read for this long (it is read every second)
READ_STALE_S = 60.0


class _CountingHandler(logging.Handler):
    """Counts selfheal's own warnings and errors by logger (a failed scrape of vLLM's /metrics,
    a journal line dropped, a notify that failed): the failures no event records."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.counts: dict[tuple[str, str], int] = {}
        self._lock_counts = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "event_type", None):  # an event's line: its own family counts it
            return
        with self._lock_counts:
            key = (record.levelname.lower(), record.name)
            self.counts[key] = self.counts.get(key, 0) + 1


class OperatorView:
    """The operator's metrics of one log, refreshed by `refresh` and read by a scrape."""

    def __init__(self, open_store: Callable[[], EventStore], *, runs_handlers: bool,
                 on_progress: Callable[[], None] | None = None, summarize: Callable[[Recorded], str] | None = None):
        self.open_store = open_store
        self.runs_handlers = runs_handlers
        self.on_progress = on_progress
        self.summarize = summarize  # an event's one line, as the timelines print it (the CLI's)
        #: whose deployment a run or an incident is: a canary's events name only their run, and
        #: a line without its deployment is lost to a journal filtered by it
        self.deployment_of: dict[str, str] = {}
        self.projection = OperatorMetricsProjection()
        self.state: OperatorMetrics = self.projection.initial()
        self.head = 0
        self.checkpoints: dict[str, int] = {}
        self._snapshot = (copy.deepcopy(self.state), 0, {})
        self._lock = threading.Lock()
        self._store: EventStore | None = None
        self._primed = False
        self.log_counts = _CountingHandler()
        #: monotonic times of the last good read of the log, and of the last sign of progress
        self.read_at: float | None = None
        self.progress_at: float | None = None

    def refresh(self) -> int:
        """Fold what was appended since the last call; returns how many events that was."""
        if self._store is None:
            self._store = self.open_store()
        store, seen = self._store, 0
        quiet = not self._primed  # the log as it was at start is folded, not logged line by line
        for event in store.read(self.state.last_position):
            self.state = self.projection.apply(self.state, event)
            seen += 1
            e = event.event
            ids = {key: getattr(e, key, None) for key in ("deployment", "run_id", "incident_id")}
            owners = [getattr(e, key, None) for key in ("run_id", "incident_id", "alert_id")]
            for owner in owners:
                if owner and ids["deployment"]:
                    self.deployment_of.setdefault(owner, ids["deployment"])
            if quiet:
                continue
            ids["deployment"] = ids["deployment"] or next(
                (self.deployment_of[o] for o in owners if o in self.deployment_of), None)
            log.log(_level(event), "%s at position %d%s", event.type, event.position, self._summary(event),
                    extra={**ids, "event_type": event.type})
        before = self.checkpoints
        self.head, self.checkpoints = store.last_position(), store.recorder.checkpoints()
        with self._lock:
            self._snapshot = (copy.deepcopy(self.state), self.head, dict(self.checkpoints))
            self._primed = True
        # progress for systemd's watchdog: a command that runs handlers is alive when none
        # lags or a checkpoint moved since the last look; one that only records, when it reads
        lagging = any(self.head > position for position in self.checkpoints.values())
        self.read_at = time.monotonic()
        if not self.runs_handlers or not lagging or self.checkpoints != before:
            self.progress_at = self.read_at
            if self.on_progress:
                self.on_progress()
        return seen

    def health(self, stale_s: float, now: float | None = None) -> tuple[bool, str]:
        """/healthz's answer: what systemd's watchdog asks, for a container or a pod, which have
        none. Unhealthy when the log has not been read for READ_STALE_S (the follower is stuck,
        or the log is gone), or when events have waited `stale_s` with no handler moving."""
        now = time.monotonic() if now is None else now
        if self.read_at is None:
            return False, "the log has not been read yet"
        if now - self.read_at > READ_STALE_S:
            return False, f"the log was last read {now - self.read_at:.0f} s ago"
        if now - (self.progress_at or 0.0) > stale_s:
            return False, f"events have waited {now - (self.progress_at or 0.0):.0f} s with no handler moving"
        return True, "ok"

    def _summary(self, event: Recorded) -> str:
        if self.summarize is None:
            return ""
        try:
            return ": " + self.summarize(event)
        except Exception:  # noqa: BLE001 - a line without its summary beats a follower that stops
            return ""

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    # -- the Collector protocol of prometheus_client -------------------------------------------

    def describe(self):
        return []  # metrics are made at each scrape; nothing to check at registration

    def collect(self):
        with self._lock:
            state, head, checkpoints = self._snapshot
        if not self._primed:  # nothing until the log has been read once: no zeros that are not so
            return
        yield _counter("events", "Events in the log.", state.events_total)
        yield _gauge("log_position", "The last position of the log that these metrics include.", head)
        age = GaugeMetricFamily(f"{PREFIX}_last_event_age_seconds", "Seconds since the last event was recorded.")
        if state.last_recorded_at:
            recorded = datetime.fromisoformat(state.last_recorded_at.replace("Z", "+00:00"))
            age.add_metric([], max(0.0, (datetime.now(timezone.utc) - recorded).total_seconds()))
        yield age
        yield _counter("incidents", "Incidents captured.", state.incidents_total)
        yield _counter("incidents_classified", "Incidents by the failure kind a rule found, or unmatched.",
                       state.incidents_by_kind, ["kind"])
        yield _counter("runs_started", "Runs started.", state.runs_started)
        yield _counter("runs", "Runs by outcome: promoted, escalated, refused.", state.runs_by_outcome, ["outcome"])
        yield _counter("canaries", "Canaries by backend and result: passed, failed_startup, failed_load.",
                       state.canaries_by_result, ["backend", "result"])
        yield _gauge("promotions_waiting", "Promotions waiting for an approval or a commit.",
                     state.promotions_waiting())
        yield _counter("commits", "Baseline commits written.", state.commits)
        yield _counter("rollbacks", "Baselines rolled back.", state.rollbacks)
        yield _counter("alerts", "Alerts raised, by kind.", state.alerts_by_kind, ["kind"])
        deliveries = {(sink, "delivered" if ok else "failed"): n for (sink, ok), n in state.deliveries.items()}
        yield _counter("alert_deliveries", "Alert deliveries by sink and result: delivered, failed.",
                       deliveries, ["sink", "result"])
        lag = GaugeMetricFamily(f"{PREFIX}_handler_lag_events", "Events recorded that a handler has not handled yet.",
                                labels=["handler"])
        # a handler with no checkpoint has handled nothing: the whole log waits for it, which is
        # what a log recorded by `observe` with no `run --follow` beside it looks like
        for handler in sorted({cls.name for cls in LOOP} | set(checkpoints)):
            lag.add_metric([handler], max(0, head - checkpoints.get(handler, 0)))
        yield lag
        with self.log_counts._lock_counts:
            counts = dict(self.log_counts.counts)
        yield _counter("log_messages", "selfheal's own warnings and errors, by level and logger.", counts,
                       ["level", "logger"])


def _level(event: Recorded) -> int:
    """An event's line is info, but for what a person must see: an alert is a warning, and an
    alert no sink took is an error, since then the log line is the only word of it that leaves
    (`journalctl -p warning` lists them, and they print at the default level)."""
    if event.type == "AlertRaised":
        return logging.WARNING
    if event.type == "AlertDelivered" and not event.event.ok:
        return logging.ERROR
    return logging.INFO


def _counter(name: str, doc: str, value, labels: list[str] | None = None) -> CounterMetricFamily:
    family = CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=labels)
    for key, n in (sorted(value.items(), key=str) if labels else [((), value)]):
        family.add_metric([str(k) for k in (key if isinstance(key, tuple) else (key,))] if labels else [], n)
    return family


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=value)


def _stale_s() -> float:
    value = os.environ.get(STALE_ENV)
    try:
        stale = float(value) if value else STALE_S
    except ValueError:
        stale = -1.0
    if not stale > 0:
        raise ValueError(f"${STALE_ENV}: {value!r} is not a number of seconds above 0")
    return stale


class _Quiet(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - a probe every few seconds is no news
        pass


def _serve(view: OperatorView, registry: CollectorRegistry, address: str, port: int, stale_s: float):
    """/metrics (prometheus_client's own WSGI app) and /healthz on one port, each request in a
    thread, as prometheus_client's start_http_server serves /metrics alone."""
    metrics = make_wsgi_app(registry)

    def app(environ, start_response):
        if environ.get("PATH_INFO") == "/healthz":
            ok, why = view.health(stale_s)
            start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain; charset=utf-8")])
            return [f"{why}\n".encode()]
        return metrics(environ, start_response)

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        address_family = socket.AF_INET6 if ":" in address else socket.AF_INET

    server = make_server(address, port, app, Server, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="selfheal-metrics-http", daemon=True).start()
    return server


class OperatorService:
    """The follower thread, and the metrics endpoint where a port is given."""

    def __init__(self, view: OperatorView, *, port: int | None, address: str = "127.0.0.1",
                 interval_s: float = 1.0):
        self.view, self.port, self.address, self.interval_s = view, port, address, interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._server = None

    def start(self) -> None:
        if self.port is not None:
            registry = CollectorRegistry(auto_describe=False)
            registry.register(self.view)
            try:
                self._server = _serve(self.view, registry, self.address, self.port, _stale_s())
            except OSError as exc:
                raise OSError(f"cannot serve metrics on {self.address}:{self.port}: {exc.strerror or exc}") from None
            self.port = self._server.server_address[1]  # the one the system chose for port 0
            log.info("serving metrics on http://%s:%d/metrics", self.address, self.port)
        logging.getLogger("selfheal").addHandler(self.view.log_counts)
        self._thread = threading.Thread(target=self._follow, name="selfheal-metrics", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        failing = False
        while True:
            try:
                self.view.refresh()
                failing = False
            except Exception as exc:  # noqa: BLE001 - the service goes on; a missing log may yet appear
                if not failing:
                    log.warning("cannot read the log for metrics: %s", " ".join(str(exc).split()))
                failing = True
                self.view.close()
            if self._stop.wait(self.interval_s):
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        logging.getLogger("selfheal").removeHandler(self.view.log_counts)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self.view.close()
