"""Reloading a vLLM server after its config file changed, and checking that it serves again.

Two ways to reload, as the deployment says: a signal to a pid or pidfile (vLLM itself exits
on SIGHUP, so this is for a supervisor such as `selfheal supervise` that restarts it), or a
restart command such as `systemctl restart vllm`. Then `wait_healthy` polls the health URL
and `probe` sends a few real completions, because /health answers before the engine can
serve and says nothing about whether the new config fits under load.

HTTP goes straight to the server (no proxy from the environment): a health URL is the
server's own, usually on loopback, where an `http_proxy` would only get in the way.

A server started with an API key wants `Authorization: Bearer <key>` on its /v1 paths, so the
probe sends it; /health never needs it (vLLM's AuthenticationMiddleware guards /v1, /v2,
/inference and /cohere only). The key is the one production is started with
(`production_launch`): the `--config` YAML's `api-key`, else VLLM_API_KEY from
`--api-key` in `serve_command`, the deployment's `env`, or selfheal's environment. It appears in
no detail string: a 401 reads "HTTP 401: unauthorized".
"""
from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

from selfheal.edges import credentials
from selfheal.edges.processes import stop_group
from selfheal.handlers.ports import Verification

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
#: what a restart command may print that is worth keeping (its tail)
_OUTPUT_LIMIT = 64 * 1024


class ReloadError(RuntimeError):
    """A reload that could not even be attempted: bad pidfile, dead pid, unknown signal."""


# --- signal -------------------------------------------------------------------------------------

def _signal(name: str) -> signal.Signals:
    key = name.strip().upper()
    key = key if key.startswith("SIG") else f"SIG{key}"
    try:
        return signal.Signals[key]
    except KeyError:
        raise ReloadError(f"unknown signal {name!r} (e.g. SIGHUP, SIGUSR1)") from None


def read_pidfile(pidfile: str | os.PathLike) -> int:
    """The pid on the first line of `pidfile`; ReloadError for a missing or garbage file."""
    try:
        raw = Path(pidfile).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise ReloadError(f"pidfile {pidfile} does not exist (is the server running?)") from None
    except OSError as exc:
        raise ReloadError(f"pidfile {pidfile}: cannot read: {exc.strerror or exc}") from None
    first = raw.strip().splitlines()[0].strip() if raw.strip() else ""
    if not first.isdigit():
        raise ReloadError(f"pidfile {pidfile} does not hold a pid: {first[:40]!r}")
    return int(first)


def _state(pid: int) -> str | None:
    """The process state letter from /proc, None when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return raw[raw.rfind(b")") + 2:].split()[0].decode()


def reload_signal(pid: int | None = None, pidfile: str | os.PathLike | None = None,
                  signal_name: str = "SIGHUP") -> str:
    """Send `signal_name` to `pid`, or to the pid read from `pidfile`; a line saying what was done.

    Refuses pids 0 and 1 and negative ones (0 and -N would signal whole process groups, -1
    every process we may signal, 1 is init) and a pid that is gone or a zombie. A pidfile can
    name a pid that was recycled by another process; that risk is the pidfile's, as for
    `kill $(cat FILE)`."""
    if (pid is None) == (pidfile is None):
        raise ReloadError("give exactly one of a pid or a pidfile")
    sig = _signal(signal_name)
    source = f" (from {pidfile})" if pidfile is not None else ""
    if pidfile is not None:
        pid = read_pidfile(pidfile)
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 1:
        raise ReloadError(f"refusing to signal pid {pid!r}{source}: not a single server process")
    state = _state(pid) if Path("/proc").is_dir() else "?"
    if state is None or state in ("Z", "X"):
        why = "a zombie (it has exited)" if state else "not running"
        raise ReloadError(f"pid {pid}{source} is {why}")
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        raise ReloadError(f"pid {pid}{source} is not running") from None
    except PermissionError:
        raise ReloadError(f"not permitted to send {sig.name} to pid {pid}{source}") from None
    return f"sent {sig.name} to pid {pid}{source}"


# --- restart command ----------------------------------------------------------------------------

def reload_restart(argv: list[str], timeout_s: float, *, env: dict[str, str] | None = None,
                   cwd: str | os.PathLike | None = None, grace_s: float = 2.0) -> tuple[int, str]:
    """Run a restart command (an argument list, never a shell) to completion; (returncode, output).

    The command leads its own process group; past `timeout_s` the whole group is stopped
    (SIGTERM, SIGKILL after `grace_s`), the returncode is then the negative signal number and
    the output ends with a line saying so. Output goes to a file, not a pipe: a command that
    starts the server in the background leaves it holding stdout, and reading a pipe to its
    end would wait for the server to exit. A command that cannot be started returns 127 (not
    found) or 126 (not executable), as a shell would. stdout and stderr are interleaved; only
    their last 64 KiB are kept."""
    if isinstance(argv, (str, bytes)) or not argv:
        raise TypeError("argv must be a non-empty argument list, never a shell string")
    with tempfile.TemporaryFile() as out:
        try:
            proc = subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True,
                                    close_fds=True)
        except FileNotFoundError:
            return 127, f"command not found: {argv[0]}"
        except PermissionError:
            return 126, f"command not executable: {argv[0]}"
        note = ""
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            how = stop_group(proc.pid, grace_s)  # the leader's pid is its group's id
            code = proc.wait()
            note = f"\nselfheal: timed out after {timeout_s:g}s; process group stopped ({how})\n"
        size = out.seek(0, os.SEEK_END)
        out.seek(max(0, size - _OUTPUT_LIMIT))
        text = out.read().decode("utf-8", errors="replace")
    return code, text + note


# --- HTTP ---------------------------------------------------------------------------------------

def _request(req: urllib.request.Request | str, timeout_s: float) -> tuple[int | None, bytes, str]:
    """(HTTP status or None, body, a short description); never raises for network trouble."""
    try:
        with _OPENER.open(req, timeout=timeout_s) as resp:
            body = resp.read()
            return resp.status, body, f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        body = exc.read() or b""
        if exc.code == 401:   # vLLM's {"error": "Unauthorized"}: no key was sent, or another one
            return exc.code, body, "HTTP 401: unauthorized (the server wants another API key)"
        excerpt = body[:200].decode("utf-8", errors="replace").strip()
        return exc.code, body, f"HTTP {exc.code}" + (f": {excerpt}" if excerpt else "")
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, ConnectionRefusedError):
            return None, b"", "connection refused"
        if isinstance(reason, TimeoutError):
            return None, b"", f"timed out after {timeout_s:.1f}s"
        return None, b"", f"cannot connect: {reason}"
    except TimeoutError:  # a read that timed out after the connection was made
        return None, b"", f"timed out after {timeout_s:.1f}s"
    except (OSError, http.client.HTTPException) as exc:  # reset, closed mid-answer, bad status line
        return None, b"", f"{type(exc).__name__}: {exc}"


def wait_healthy(url: str, deadline_s: float, poll_s: float = 1.0, *,
                 request_timeout_s: float = 5.0) -> tuple[bool, str]:
    """Poll `url` until it answers 2xx, for at most `deadline_s` seconds; (healthy, detail).

    A refused connection, a 5xx, a timeout (each request is bounded by what is left of the
    deadline) are all "not yet"; so is a 4xx, reported in the detail if it is the last word.
    There is always at least one poll, and the last one is made at the deadline."""
    start = time.monotonic()
    end = start + deadline_s
    polls, last = 0, "no answer"
    while True:
        polls += 1
        timeout = max(0.05, min(request_timeout_s, end - time.monotonic()))
        status, _, detail = _request(url, timeout)
        if status is not None and 200 <= status < 300:
            return True, f"healthy after {polls} poll(s) in {time.monotonic() - start:.1f}s: {detail}"
        last = detail
        left = end - time.monotonic()
        if left <= 0:
            return False, f"not healthy within {deadline_s:g}s ({polls} poll(s)); last: {last}"
        time.sleep(min(poll_s, left))


def wait_down(url: str, grace_s: float, poll_s: float = 0.1) -> bool:
    """After a reload signal, wait (at most `grace_s`) for the old server to stop answering 2xx.

    A signal reload is asynchronous: without this, verification could poll the old server
    before it went away and call the new configuration healthy. A server that reloads in
    place never goes down; then this returns False after the grace period and verification
    goes on (the probe still checks that it serves)."""
    end = time.monotonic() + grace_s
    while time.monotonic() < end:
        status, _, _ = _request(url, min(1.0, max(0.05, end - time.monotonic())))
        if status is None or not 200 <= status < 300:
            return True
        time.sleep(poll_s)
    return False


def _completions_url(base_url: str) -> str:
    base = base_url.rstrip("/")
    return f"{base}/completions" if base.endswith("/v1") else f"{base}/v1/completions"


def _one_completion(url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> tuple[bool, float, str]:
    started = time.monotonic()
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    status, raw, detail = _request(req, timeout_s)
    took = time.monotonic() - started
    if status != 200:
        return False, took, detail
    try:
        choices = json.loads(raw)["choices"]
        ok = isinstance(choices, list) and bool(choices) and isinstance(choices[0].get("text"), str)
    except (ValueError, KeyError, TypeError, AttributeError):
        ok = False
    return ok, took, "ok" if ok else f"HTTP 200 but not a completion: {raw[:200]!r}"


def probe(base_url: str, model: str, requests: int = 3, max_tokens: int = 8, timeout_s: float = 30.0, *,
          prompt: str = "The capital of France is", api_key: str | None = None) -> tuple[bool, str]:
    """A short load probe: `requests` concurrent completions through `/v1/completions`, all of
    which must come back as completions within `timeout_s`; (ok, detail).

    Concurrent, because a config that starts but cannot batch (too few sequences, too little
    KV cache) fails under a little load, not under one request."""
    if requests < 1:
        raise ValueError("a probe needs at least one request")
    url = _completions_url(base_url)
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}).encode()
    headers = {"Content-Type": "application/json", **credentials.bearer(api_key)}
    with ThreadPoolExecutor(max_workers=requests) as pool:
        results = list(pool.map(lambda _: _one_completion(url, body, headers, timeout_s), range(requests)))
    good = sum(ok for ok, _, _ in results)
    slowest = max(took for _, took, _ in results)
    if good == requests:
        return True, f"{good}/{requests} completions ok from {url}; slowest {slowest * 1000:.0f} ms"
    first = next((i, detail) for i, (ok, _, detail) in enumerate(results) if not ok)
    return False, f"{good}/{requests} completions ok from {url}; request {first[0] + 1}: {first[1]}"


def production_launch(settings, base: dict[str, str] | None = None) -> tuple[list[str], dict[str, str], str | None]:
    """(argv, whole environment, API key) of production as `selfheal supervise` starts it:
    `serve_command` without its credentials, filled in; `base` (default: selfheal's environment)
    under the deployment's `env` under the moved credentials. Credentials are taken off before
    the template is filled, so a secret is never read as a template (CredentialError, a
    ValueError, for a flag that cannot move)."""
    template, env, _ = credentials.launch(settings.serve_command, settings.env, base)
    fill = {"model": settings.model, "config_file": settings.config_file or ""}
    argv = [part.format(**fill) for part in template]
    return argv, env, credentials.api_key(argv, env)


class ServerReloader:
    """The Reloader port (handlers.ports): reload production as the deployment says, then
    wait for health within the deadline and run a short completions probe.

    It reports when it finished: `started_at` (the request's time) plus the seconds it worked
    on a monotonic clock, as the canary backend does, so the verification's result is dated
    after the 30-90 s a restart and its checks take, not at the canary's end."""

    def __init__(self, settings):
        self.settings = settings

    def reload_and_verify(self, method: str, started_at: datetime) -> Verification:
        t0 = time.monotonic()
        healthy, detail = self._reload_and_verify(method)
        return Verification(healthy=healthy, detail=detail,
                            finished_at=started_at + timedelta(seconds=time.monotonic() - t0))

    def _reload_and_verify(self, method: str) -> tuple[bool, str]:
        settings = self.settings
        healthy, detail = True, "no reload configured: nothing to verify"
        try:
            if method == "restart":
                code, output = reload_restart(settings.reload.argv, settings.reload.timeout_s)
                if code != 0:
                    healthy, detail = False, f"restart command exited {code}: {output[-300:]}"
            elif method == "signal":
                reload_signal(settings.reload.pid, settings.reload.pidfile, settings.reload.signal)
                if settings.health_url:
                    wait_down(settings.health_url, min(30.0, settings.verify.deadline_s))
            if healthy and method != "none" and settings.health_url:
                healthy, detail = wait_healthy(settings.health_url, settings.verify.deadline_s)
                if healthy and settings.verify.probe_requests:
                    base = settings.health_url.rsplit("/health", 1)[0]
                    key = production_launch(settings)[2]
                    healthy, detail = probe(base, settings.model, settings.verify.probe_requests, api_key=key)
        except (ReloadError, OSError, credentials.CredentialError) as exc:
            healthy, detail = False, str(exc)
        return healthy, detail
