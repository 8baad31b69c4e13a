"""Alerts that must reach a person, the grouping of repeats, and the sinks that deliver them.

An alert is plain data (a frozen msgspec Struct); its JSON (`to_json`) is what every sink
delivers, byte for byte. Sinks never raise for a failed delivery: they return a
`DeliveryResult` with every attempt, so the caller can record each attempt as an event and
decide what to do next. Nothing here reads or writes the event log.
"""
from __future__ import annotations

import contextlib
import fcntl
import http.client
import ipaddress
import math
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Protocol
from urllib.parse import urlsplit

import msgspec

_TAIL = 2000  # characters of a response body or of command output kept in `detail`


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Alert(msgspec.Struct, frozen=True, kw_only=True):
    alert_id: str
    deployment: str
    kind: str  # escalation | promotion_lapsed | verification_failed | rolled_back | ...
    summary: str
    evidence: dict
    raised_at: datetime
    fingerprint: str  # same fingerprint = same alert (see `group`)
    count: int = 1  # how many repeats this delivery stands for

    def __post_init__(self) -> None:
        # A naive time cannot be compared across hosts; refuse it rather than guess a zone.
        if self.raised_at.utcoffset() is None:
            raise ValueError(f"Alert.raised_at must be timezone-aware, got {self.raised_at!r}")
        if self.raised_at.utcoffset() != timedelta(0):
            msgspec.structs.force_setattr(self, "raised_at", self.raised_at.astimezone(timezone.utc))
        # Summaries are often built from log excerpts; a pager or a JSONL grep wants one line,
        # and refusing the alert would lose it, so fold the lines instead.
        if "\n" in self.summary or "\r" in self.summary:
            msgspec.structs.force_setattr(self, "summary", " ".join(self.summary.split()))
        if self.count < 1:
            raise ValueError(f"Alert.count must be >= 1, got {self.count}")


def to_json(alert: Alert) -> bytes:
    """The alert as compact JSON, one line (what every sink delivers)."""
    return msgspec.json.encode(alert)


def group(alerts: list[Alert], window: timedelta) -> list[Alert]:
    """Fold repeats of a fingerprint raised within `window` of their group's first alert.

    Pure and order-independent: alerts are taken by (raised_at, alert_id), each delivery is
    the group's first alert with `count` = the sum of the counts folded into it (1 each for
    fresh alerts, so re-grouping grouped alerts keeps the totals), and deliveries come in the
    order of their first alerts. Windows are fixed from a group's first alert, not sliding, so
    a storm that lasts hours still yields one delivery per window: people hear it goes on.
    """
    if window < timedelta(0):
        raise ValueError(f"window must not be negative, got {window}")
    ordered = sorted(alerts, key=lambda a: (a.raised_at, a.alert_id, a.fingerprint))
    groups: list[list] = []  # [first alert, total count]
    current: dict[str, int] = {}  # fingerprint -> index of its open group
    for alert in ordered:
        i = current.get(alert.fingerprint)
        if i is not None and alert.raised_at - groups[i][0].raised_at <= window:
            groups[i][1] += alert.count
        else:
            current[alert.fingerprint] = len(groups)
            groups.append([alert, alert.count])
    return [first if n == first.count else msgspec.structs.replace(first, count=n)
            for first, n in groups]


class Attempt(msgspec.Struct, frozen=True, kw_only=True):
    number: int  # 1-based
    started_at: datetime
    status: int | None = None  # HTTP status (webhook) or exit code (command); None if none came
    error: str | None = None
    duration_s: float = 0.0


class DeliveryResult(msgspec.Struct, frozen=True, kw_only=True):
    ok: bool
    attempts: list[Attempt]
    detail: str = ""


class Sink(Protocol):
    kind: str
    target: str  # what to name the sink by in events (never a secret)

    def deliver(self, alert: Alert) -> DeliveryResult: ...


def _tail(data: bytes | str | None) -> str:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else (data or "")
    return text[-_TAIL:]


def _describe(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)  # URLError wraps the socket error
    inner = reason if isinstance(reason, BaseException) else exc
    return f"{type(inner).__name__}: {inner}"


class JsonlSink:
    """Append one JSON line per alert: O_APPEND, one write under an exclusive lock, fsync."""

    kind = "jsonl"

    def __init__(self, path: str | os.PathLike, *, clock: Callable[[], datetime] = _utcnow):
        self.path = Path(path)
        self.target = str(self.path)
        self._clock = clock

    def deliver(self, alert: Alert) -> DeliveryResult:
        started, t0 = self._clock(), time.monotonic()
        line = to_json(alert) + b"\n"
        flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC
        try:
            try:
                fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, 0o600)
                created = True
            except FileExistsError:
                fd = os.open(self.path, flags)  # an existing file keeps the operator's mode
                created = False
            try:
                # O_APPEND alone keeps whole writes apart, but a short write (disk full, signal)
                # could let another process's line land inside ours; the lock rules that out.
                fcntl.flock(fd, fcntl.LOCK_EX)
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    line = b"\n" + line  # a writer died mid-line: keep our line whole and apart
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)  # also releases the lock
            if created:  # the new name itself must survive a crash
                dfd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
        except OSError as exc:
            attempt = Attempt(number=1, started_at=started, error=_describe(exc),
                              duration_s=time.monotonic() - t0)
            return DeliveryResult(ok=False, attempts=[attempt], detail=f"{self.path}: {exc}")
        attempt = Attempt(number=1, started_at=started, duration_s=time.monotonic() - t0)
        return DeliveryResult(ok=True, attempts=[attempt], detail=f"appended to {self.path}")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # urllib would turn a redirected POST into a bodiless GET: the alert would be lost while
    # looking delivered. A redirect is a final failure instead (fix the URL in the config).
    def redirect_request(self, *args, **kwargs):
        return None


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _number(name: str, value: float, minimum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < minimum:
        raise ValueError(f"key {name!r} must be a number >= {minimum:g}, got {value!r}")
    return value


class WebhookSink:
    """HTTP POST of the alert JSON, retried with exponential backoff on transient failures."""

    kind = "webhook"

    def __init__(self, url: str, *, retries: int = 4, backoff_s: float = 0.5,
                 backoff_factor: float = 2.0, max_backoff_s: float = 30, timeout_s: float = 5,
                 headers: dict[str, str] | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], datetime] = _utcnow):
        try:
            parts = urlsplit(url)
            port = f":{parts.port}" if parts.port else ""  # .port raises on a bad port
        except (TypeError, ValueError, AttributeError):
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"key 'url' must be an http:// or https:// URL, got {url!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"key 'retries' must be an integer >= 0, got {retries!r}")
        if headers is not None and not (isinstance(headers, dict) and all(
                isinstance(k, str) and isinstance(v, str) for k, v in headers.items())):
            raise ValueError(f"key 'headers' must be a table of strings, got {headers!r}")
        self.url, self.retries = url, retries
        self.backoff_s = _number("backoff_s", backoff_s, 0)
        self.backoff_factor = _number("backoff_factor", backoff_factor, 1)
        self.max_backoff_s = _number("max_backoff_s", max_backoff_s, 0)
        self.timeout_s = _number("timeout_s", timeout_s, 0.001)
        # Hook URLs often carry a token in the path or user part: events name scheme and host only.
        self.target = f"{parts.scheme}://{parts.hostname}{port}"
        handlers: list = [_NoRedirect()]
        if _is_loopback(parts.hostname):  # a proxy cannot reach our loopback; never send it there
            handlers.append(urllib.request.ProxyHandler({}))
        self._opener = urllib.request.build_opener(*handlers)
        self._headers = {"Content-Type": "application/json", "User-Agent": "selfheal-alerts",
                         **(headers or {})}
        self._sleep, self._clock = sleep, clock

    def delay(self, failed_attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait after attempt `failed_attempt`: Retry-After if given, else backoff."""
        if retry_after is not None:
            try:
                seconds = float(retry_after)
                if math.isfinite(seconds):
                    return min(max(seconds, 0.0), self.max_backoff_s)
            except ValueError:
                pass  # an HTTP-date: use our own backoff rather than trust two wall clocks
        return min(self.backoff_s * self.backoff_factor ** (failed_attempt - 1), self.max_backoff_s)

    def deliver(self, alert: Alert) -> DeliveryResult:
        body = to_json(alert)
        # A retried POST may arrive twice (a timeout after the server got it): give receivers a key.
        headers = {"Idempotency-Key": alert.alert_id, **self._headers}
        attempts: list[Attempt] = []
        detail = ""
        for number in range(1, self.retries + 2):
            started, t0 = self._clock(), time.monotonic()
            status = error = retry_after = None
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with self._opener.open(request, timeout=self.timeout_s) as response:
                    status, text = response.status, response.read(_TAIL)
            except urllib.error.HTTPError as exc:
                status, retry_after = exc.code, exc.headers.get("Retry-After")
                try:
                    text = exc.read(_TAIL)
                except (OSError, http.client.HTTPException):
                    text = b""
                exc.close()
                error = f"HTTP {status} {exc.reason}"
            except (OSError, http.client.HTTPException) as exc:  # refused, reset, timeout, bad reply
                text, error = b"", _describe(exc)
            attempts.append(Attempt(number=number, started_at=started, status=status, error=error,
                                    duration_s=time.monotonic() - t0))
            detail = f"{self.target}: {error or f'HTTP {status}'}" + (
                f"; response: {_tail(text)}" if text else "")
            if status is not None and 200 <= status < 300:
                return DeliveryResult(ok=True, attempts=attempts, detail=detail)
            transient = status is None or status == 429 or status >= 500
            if not transient or number > self.retries:
                break
            self._sleep(self.delay(number, retry_after))
        return DeliveryResult(ok=False, attempts=attempts, detail=detail)


class CommandSink:
    """Run an argument list (never a shell) with the alert JSON on standard input; ok iff exit 0."""

    kind = "command"

    def __init__(self, argv: list[str], *, timeout_s: float = 30,
                 clock: Callable[[], datetime] = _utcnow):
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise ValueError(f"key 'argv' must be a non-empty list of strings, got {argv!r}")
        self.argv = list(argv)
        self.timeout_s = _number("timeout_s", timeout_s, 0.001)
        self.target = argv[0]  # later arguments may hold tokens
        self._clock = clock

    def deliver(self, alert: Alert) -> DeliveryResult:
        started, t0 = self._clock(), time.monotonic()
        # The essentials in the environment too, so a one-line script need not parse JSON.
        env = {**os.environ, "SELFHEAL_ALERT_ID": alert.alert_id,
               "SELFHEAL_ALERT_KIND": alert.kind, "SELFHEAL_ALERT_DEPLOYMENT": alert.deployment}
        status, error, out, err = None, None, b"", b""
        try:
            # Its own session, so a timeout can kill everything it started, not just the leader.
            proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=env, start_new_session=True)
        except OSError as exc:
            error = _describe(exc)
        else:
            try:
                out, err = proc.communicate(to_json(alert), timeout=self.timeout_s)
                status = proc.returncode
                error = None if status == 0 else f"exit status {status}"
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                try:
                    out, err = proc.communicate(timeout=2)
                except subprocess.TimeoutExpired:  # a process that left the group holds the pipes
                    proc.wait()
                    for pipe in (proc.stdin, proc.stdout, proc.stderr):
                        pipe.close()
                error = f"timed out after {self.timeout_s:g}s; process group killed"
        attempt = Attempt(number=1, started_at=started, status=status, error=error,
                          duration_s=time.monotonic() - t0)
        detail = f"{self.target}: {error or 'exit status 0'}"
        if out:
            detail += f"; stdout: {_tail(out)}"
        if err:
            detail += f"; stderr: {_tail(err)}"
        return DeliveryResult(ok=status == 0, attempts=[attempt], detail=detail)


# type -> (class, required keys, optional keys); a key's type is checked here, its range by the class
_SPECS: dict[str, tuple[type, dict[str, type], dict[str, type]]] = {
    "jsonl": (JsonlSink, {"path": str}, {}),
    "webhook": (WebhookSink, {"url": str}, {
        "retries": int, "backoff_s": float, "backoff_factor": float, "max_backoff_s": float,
        "timeout_s": float, "headers": dict}),
    "command": (CommandSink, {"argv": list}, {"timeout_s": float}),
}
_WORDS = {str: "a string", int: "an integer", float: "a number", dict: "a table", list: "a list"}


def sink_from_config(spec: dict, *, base_dir: str | os.PathLike | None = None) -> Sink:
    """Build a sink from a config entry; a relative JSONL path is taken from `base_dir` if given."""
    if not isinstance(spec, dict):
        raise ValueError(f"alert sink: expected a table with a 'type' key, got {spec!r}")
    kind = spec.get("type")
    if kind not in _SPECS:
        raise ValueError(f"alert sink: key 'type' must be one of {', '.join(sorted(_SPECS))}; "
                         f"got {kind!r}")
    cls, required, optional = _SPECS[kind]
    allowed = {"type": str, **required, **optional}
    for key in spec:
        if key not in allowed:
            raise ValueError(f"alert sink {kind!r}: unknown key {key!r}; allowed keys: "
                             f"{', '.join(sorted(allowed))}")
    kwargs = {}
    for key, want in {**required, **optional}.items():
        if key not in spec:
            if key in required:
                raise ValueError(f"alert sink {kind!r}: missing required key {key!r}")
            continue
        value = spec[key]
        accepted = (int, float) if want is float else want
        if isinstance(value, bool) or not isinstance(value, accepted):
            raise ValueError(f"alert sink {kind!r}: key {key!r} must be {_WORDS[want]}, "
                             f"got {value!r}")
        kwargs[key] = value
    if kind == "jsonl" and base_dir is not None:
        kwargs["path"] = Path(base_dir) / kwargs["path"]  # an absolute path stays as it is
    try:
        return cls(**kwargs)
    except ValueError as exc:
        raise ValueError(f"alert sink {kind!r}: {exc}") from None


class ConfiguredSinks:
    """The AlertSinks port (handlers.ports): every sink of a deployment's `alerts` entries,
    built when it is used, so a bad entry fails that delivery with its reason."""

    def __init__(self, specs: list[dict]):
        self.specs = specs

    def deliver(self, raised, raised_at: datetime, count: int) -> list[tuple[str, DeliveryResult]]:
        alert = Alert(alert_id=raised.alert_id, deployment=raised.deployment, kind=raised.kind,
                      summary=raised.summary, evidence=dict(raised.evidence), raised_at=raised_at,
                      fingerprint=raised.fingerprint, count=count)
        return [(f"{spec['type']}:{index}", sink_from_config(spec).deliver(alert))
                for index, spec in enumerate(self.specs)]
