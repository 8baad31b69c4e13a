"""Alerts that must reach a person, the grouping of repeats, and the sinks that deliver them.

An alert is plain data (a frozen msgspec Struct); its JSON (`to_json`) is what every sink
delivers, byte for byte. Sinks never raise for a failed delivery: they return a
`DeliveryResult` with every attempt, so the caller can record each attempt as an event and
decide what to do next. Nothing here reads or writes the event log.

Every attempt is bounded in time and memory whatever the other side does. `timeout_s` is a
wall-clock deadline over the whole attempt (connect, send, status, headers and body of a
webhook; a command from start to exit; the JSONL file's lock), not per socket read, so a
server that drips a byte at a time cannot hold it longer. `max_output_bytes` caps what is
read and kept of a webhook's response (the first bytes) and of a command's stdout and stderr
(the last bytes; the rest is drained and discarded, so the command is not blocked on a full
pipe). A result whose output was cut says so in its `detail`.
"""
from __future__ import annotations

import collections
import contextlib
import fcntl
import functools
import http.client
import io
import ipaddress
import math
import os
import selectors
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
MAX_OUTPUT_BYTES = 64 * 1024  # default cap on a response or on each output stream, read and kept
_CHUNK = 64 * 1024
_POLL_S = 0.01


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

    def __init__(self, path: str | os.PathLike, *, timeout_s: float = 10,
                 clock: Callable[[], datetime] = _utcnow):
        self.path = Path(path)
        self.target = str(self.path)
        self.timeout_s = _number("timeout_s", timeout_s, 0.001)  # the wait for the file's lock
        self._clock = clock

    def _lock(self, fd: int, deadline: float) -> None:
        """The file's exclusive lock, waited for until `deadline` (another writer may hold it)."""
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"the file stayed locked by another writer past the "
                                       f"{self.timeout_s:g}s deadline") from None
                time.sleep(_POLL_S)

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
                self._lock(fd, t0 + self.timeout_s)
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


def _cap(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"key 'max_output_bytes' must be an integer >= 1, got {value!r}")
    return value


class _Deadline:
    """A wall-clock deadline over a whole attempt: `left()` is what remains for the next
    blocking step, and raises TimeoutError once nothing does."""

    def __init__(self, seconds: float):
        self.seconds, self.end = seconds, time.monotonic() + seconds

    def left(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        return left


class _DeadlineReader(io.RawIOBase):
    """The socket's reads, each allowed only what is left of the deadline (http.client sets
    one timeout per read, which a server sending a byte at a time renews for ever)."""

    def __init__(self, sock, deadline: _Deadline):
        self._sock, self._raw, self._deadline = sock, sock.makefile("rb", buffering=0), deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int | None:
        self._sock.settimeout(self._deadline.left())
        return self._raw.readinto(buffer)

    def close(self) -> None:
        if not self.closed:
            self._raw.close()  # the socket itself closes once its owner has closed it too
        super().close()


class _DeadlineResponse(http.client.HTTPResponse):
    def __init__(self, sock, *args, deadline: _Deadline, **kwargs):
        super().__init__(sock, *args, **kwargs)
        self.fp.close()  # nothing read through it yet
        self.fp = io.BufferedReader(_DeadlineReader(sock, deadline))


class _DeadlineConnection:
    """Connect, send and every read of an HTTP(S) connection within one `_Deadline`; a TLS
    handshake is one call that the socket's timeout (what is left) bounds as a whole."""

    def __init__(self, *args, deadline: _Deadline, **kwargs):
        super().__init__(*args, **kwargs)
        self._deadline = deadline
        self.response_class = functools.partial(_DeadlineResponse, deadline=deadline)

    def connect(self) -> None:
        self.timeout = self._deadline.left()
        super().connect()

    def send(self, data) -> None:
        if self.sock is None:
            self.connect()
        self.sock.settimeout(self._deadline.left())  # sendall's timeout covers the whole call
        super().send(data)


class _DeadlineHTTP(_DeadlineConnection, http.client.HTTPConnection):
    pass


class _DeadlineHTTPS(_DeadlineConnection, http.client.HTTPSConnection):
    pass


class _DeadlineHTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req):
        return self.do_open(_DeadlineHTTP, req, deadline=req.deadline)


class _DeadlineHTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req):
        return self.do_open(_DeadlineHTTPS, req, context=self._context, deadline=req.deadline)


def _read_capped(response, cap: int, deadline: _Deadline) -> tuple[bytes, str]:
    """At most `cap` bytes of a response body, read within the deadline; and why it was cut
    ("" when it was read whole). What is past the cap is never read."""
    kept = bytearray()
    read1 = getattr(response, "read1", None) or response.read
    try:
        while len(kept) <= cap:  # one byte past the cap says there was more
            chunk = read1(min(_CHUNK, cap + 1 - len(kept)))
            if not chunk:
                return bytes(kept), ""
            kept += chunk
    except TimeoutError:
        return bytes(kept), (f"response cut at the {deadline.seconds:g}s deadline after "
                             f"{len(kept):,} bytes")
    except (OSError, http.client.HTTPException) as exc:
        return bytes(kept), f"response cut after {len(kept):,} bytes: {_describe(exc)}"
    return bytes(kept[:cap]), f"response cut: first {cap:,} bytes kept (max_output_bytes)"


class WebhookSink:
    """HTTP POST of the alert JSON, retried with exponential backoff on transient failures."""

    kind = "webhook"

    def __init__(self, url: str, *, retries: int = 4, backoff_s: float = 0.5,
                 backoff_factor: float = 2.0, max_backoff_s: float = 30, timeout_s: float = 5,
                 max_output_bytes: int = MAX_OUTPUT_BYTES, headers: dict[str, str] | None = None,
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
        self.timeout_s = _number("timeout_s", timeout_s, 0.001)  # each attempt, as a whole
        self.max_output_bytes = _cap(max_output_bytes)
        # Hook URLs often carry a token in the path or user part: events name scheme and host only.
        self.target = f"{parts.scheme}://{parts.hostname}{port}"
        handlers: list = [_NoRedirect(), _DeadlineHTTPHandler(), _DeadlineHTTPSHandler()]
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
            text, cut = b"", ""
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            request.deadline = deadline = _Deadline(self.timeout_s)
            try:
                with self._opener.open(request, timeout=self.timeout_s) as response:
                    status = response.status
                    text, cut = _read_capped(response, self.max_output_bytes, deadline)
            except urllib.error.HTTPError as exc:
                status, retry_after = exc.code, exc.headers.get("Retry-After")
                if exc.fp is not None:
                    text, cut = _read_capped(exc, self.max_output_bytes, deadline)
                exc.close()
                error = f"HTTP {status} {exc.reason}"
            except (OSError, http.client.HTTPException) as exc:  # refused, reset, timeout, bad reply
                error = _describe(exc)
                if isinstance(getattr(exc, "reason", exc), TimeoutError):
                    error += f": no complete answer within the {self.timeout_s:g}s deadline"
            attempts.append(Attempt(number=number, started_at=started, status=status, error=error,
                                    duration_s=time.monotonic() - t0))
            detail = f"{self.target}: {error or f'HTTP {status}'}" + (f"; {cut}" if cut else "") + (
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
                 max_output_bytes: int = MAX_OUTPUT_BYTES, clock: Callable[[], datetime] = _utcnow):
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise ValueError(f"key 'argv' must be a non-empty list of strings, got {argv!r}")
        self.argv = list(argv)
        self.timeout_s = _number("timeout_s", timeout_s, 0.001)  # from start to exit
        self.max_output_bytes = _cap(max_output_bytes)  # of stdout and of stderr, each
        self.target = argv[0]  # later arguments may hold tokens
        self._clock = clock

    def deliver(self, alert: Alert) -> DeliveryResult:
        started, t0 = self._clock(), time.monotonic()
        # The essentials in the environment too, so a one-line script need not parse JSON.
        env = {**os.environ, "SELFHEAL_ALERT_ID": alert.alert_id,
               "SELFHEAL_ALERT_KIND": alert.kind, "SELFHEAL_ALERT_DEPLOYMENT": alert.deployment}
        status, error = None, None
        out, err = _Tail(self.max_output_bytes), _Tail(self.max_output_bytes)
        try:
            # Its own session, so a timeout can kill everything it started, not just the leader.
            proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=env, start_new_session=True)
        except OSError as exc:
            error = _describe(exc)
        else:
            try:
                if _exchange(proc, to_json(alert), out, err, t0 + self.timeout_s):
                    status = proc.returncode
                    error = None if status == 0 else f"exit status {status}"
                else:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=2)  # the leader dies at once; never hang on it
                    error = f"timed out after {self.timeout_s:g}s; process group killed"
            finally:  # a process that left the group may hold the pipes: we stop reading them
                for pipe in (proc.stdin, proc.stdout, proc.stderr):
                    pipe.close()
        attempt = Attempt(number=1, started_at=started, status=status, error=error,
                          duration_s=time.monotonic() - t0)
        detail = f"{self.target}: {error or 'exit status 0'}"
        for name, kept in (("stdout", out), ("stderr", err)):
            detail += kept.describe(name)
        return DeliveryResult(ok=status == 0, attempts=[attempt], detail=detail)


class _Tail:
    """The last `cap` bytes of a stream (whole chunks until the end, then cut), and its size."""

    def __init__(self, cap: int):
        self.cap, self.total, self._held = cap, 0, 0
        self._chunks: collections.deque[bytes] = collections.deque()

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        self._chunks.append(chunk)
        self._held += len(chunk)
        while self._held - len(self._chunks[0]) >= self.cap:  # the rest still holds the cap
            self._held -= len(self._chunks.popleft())

    def describe(self, name: str) -> str:
        """"; NAME: text" for `detail` ("" for no output), saying so when it was cut."""
        if not self.total:
            return ""
        kept = b"".join(self._chunks)[-self.cap:]
        if self.total <= self.cap:
            return f"; {name}: {_tail(kept)}"
        return f"; {name} cut ({self.total:,} bytes, last {self.cap:,} bytes kept): {_tail(kept)}"


def _exchange(proc: subprocess.Popen, data: bytes, out: _Tail, err: _Tail, deadline: float) -> bool:
    """Write `data` to the process's stdin and read its stdout and stderr into `out` and
    `err` until it has exited with both closed; False if `deadline` (monotonic) came first.
    Everything it prints is read, so a full pipe never blocks it, but only the tails are kept."""
    streams = {proc.stdout: out, proc.stderr: err}
    pending = memoryview(data)
    with selectors.DefaultSelector() as selector:
        if pending:
            os.set_blocking(proc.stdin.fileno(), False)
            selector.register(proc.stdin, selectors.EVENT_WRITE)
        else:
            proc.stdin.close()
        for stream in streams:
            selector.register(stream, selectors.EVENT_READ)
        while selector.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            for key, _ in selector.select(left):
                if key.fileobj is proc.stdin:
                    try:
                        pending = pending[os.write(key.fd, pending[:_CHUNK]):]
                    except BlockingIOError:
                        continue
                    except BrokenPipeError:  # it does not read its input: that is its affair
                        pending = pending[:0]
                    if not pending:
                        selector.unregister(proc.stdin)
                        proc.stdin.close()
                    continue
                chunk = os.read(key.fd, _CHUNK)
                if chunk:
                    streams[key.fileobj].add(chunk)
                else:
                    selector.unregister(key.fileobj)
    try:
        proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return False
    return True


# type -> (class, required keys, optional keys); a key's type is checked here, its range by the class
_SPECS: dict[str, tuple[type, dict[str, type], dict[str, type]]] = {
    "jsonl": (JsonlSink, {"path": str}, {"timeout_s": float}),
    "webhook": (WebhookSink, {"url": str}, {
        "retries": int, "backoff_s": float, "backoff_factor": float, "max_backoff_s": float,
        "timeout_s": float, "max_output_bytes": int, "headers": dict}),
    "command": (CommandSink, {"argv": list}, {"timeout_s": float, "max_output_bytes": int}),
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
                             f"{', '.join(sorted(['type', *required]))}"
                             + (f", and optionally {', '.join(sorted(optional))}" if optional else ""))
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
