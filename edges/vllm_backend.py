"""The `vllm` canary backend: start the candidate with `vllm serve`, load it, measure it, stop it.

One canary, in order (MISSION stage 5):

1. a free loopback port; `vllm serve` from an argument-list template (never a shell) with the
   candidate's `cli_args()` appended, as the leader of its own process group, marked with
   `SELFHEAL_CANARY_ID` (edges/processes.py); `on_launch` hears of it at once, so the caller
   can record the pid/pgid before anything else can go wrong. Credentials never ride on argv:
   `--api-key`/`--hf-token` in the template move to VLLM_API_KEY/HF_TOKEN in the canary's
   environment (edges/credentials.py), so the argv seen by `ps` and recorded is free of them;
2. `GET /health` until 200 within the deadline, while watching for the process to exit (a
   startup failure: the log says why, and the observer's `diagnose` names it);
3. `/metrics` scraped, then a load phase through the OpenAI completions API, then `/metrics`
   again once nothing runs or waits (preemptions are the difference); a load phase fails on
   more failed requests than `max_error_ratio` allows, or when the server dies. With an API key
   (moved from the template, VLLM_API_KEY in the deployment's env, or a `--config` YAML), each
   `/v1/...` request carries `Authorization: Bearer <key>`; `/health` and `/metrics` do not,
   since vLLM's AuthenticationMiddleware guards only /v1, /v2, /inference and /cohere
   (vllm/entrypoints/serve/utils/server_utils.py, GUARDED_PREFIX). The key's value is redacted
   from the log kept, and never appears in an error string (a 401 reads "unauthorized");
4. always, in `finally`: the whole process group is stopped (SIGTERM, SIGKILL after grace).

Measurement conventions (where vLLM gives no number directly):
- prompt length is counted in words, one word taken as one token: a prompt is a request number
  followed by a repeated common word (default "the"), which common tokenizers encode as one
  token each; the request number keeps prompts apart so prefix caching cannot share their KV
  blocks. Prompts go up to `prompt_fraction` of max_model_len (default 0.5), never closer
  than max_tokens + 8 tokens to it, so the approximation has room for BOS and odd tokens;
- TTFT is the time to the first streamed chunk (`stream: true`; 0 with stream off); throughput is completion
  tokens (from `usage`, else one per streamed chunk) over the load phase's wall time;
- peak memory is the summed RSS of the canary's process group, sampled from /proc: on a GPU
  host this is host memory, not GPU memory (GPU peak comes from NVML, a later step), and
  gpu_headroom_gib is left 0 here for the same reason;
- KV cache tokens, maximum concurrency and available KV memory are read from vLLM's startup
  log; with several lines (workers, DP engines) the smallest is kept, as the simulator does.
"""
from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import msgspec

from selfheal.handlers.ports import CanaryOutcome, Launch
from selfheal.edges import credentials
from selfheal.edges.processes import Child, PeakRss, free_loopback_port, spawn
from selfheal.handlers.observer import diagnose
from selfheal.schemas.events import CanaryMeasurements
from selfheal.schemas.failures import CONFIG_KINDS
from selfheal.schemas.serving import ServingConfig

DEFAULT_COMMAND = ["vllm", "serve", "{model}", "--host", "{host}", "--port", "{port}"]
MAX_REQUESTS = 10_000          # a load phase is a probe, not a benchmark
PROMPT_RESERVE = 8             # tokens left free besides max_tokens: BOS, and words that split in two
_GIB = 1 << 30
_SETTLE_S = 2.0                # how long a server that dropped connections gets to show it is exiting


class LoadSettings(msgspec.Struct, frozen=True, kw_only=True):
    requests: int = 32                  # completions sent in all
    max_concurrency: int = 16           # worker threads, further capped by the candidate's max_num_seqs
    max_tokens: int = 64                # completion tokens per request (ignore_eos, so each gets them all)
    prompt_fraction: float = 0.5        # longest prompt, as a fraction of max_model_len
    max_error_ratio: float = 0.0        # failed requests tolerated, as a fraction of `requests`
    request_timeout_s: float = 120.0
    deadline_s: float = 600.0           # the whole load phase
    stream: bool = True                 # needed for TTFT
    word: str = "the"
    #: fail the load phase on more preemptions than this per request (None: preemptions are only measured)
    max_preemptions_per_request: float | None = None

    def __post_init__(self) -> None:
        checks = [(1 <= self.requests <= MAX_REQUESTS, f"requests must be 1..{MAX_REQUESTS}"),
                  (self.max_concurrency >= 1 and self.max_tokens >= 1, "max_concurrency and max_tokens must be >= 1"),
                  (0 < self.prompt_fraction <= 1, "prompt_fraction must be in (0, 1]"),
                  (0 <= self.max_error_ratio <= 1, "max_error_ratio must be in [0, 1]"),
                  (self.request_timeout_s > 0 and self.deadline_s > 0, "timeouts must be positive"),
                  (len(self.word.split()) == 1, "word must be one word")]
        wrong = [why for ok, why in checks if not ok]
        if wrong:
            raise ValueError(f"invalid load settings ({self}): " + "; ".join(wrong))


class LoadResult(msgspec.Struct, kw_only=True):
    sent: int
    ok: int
    failed: int
    latencies_ms: list[float]
    ttfts_ms: list[float]
    completion_tokens: int
    wall_s: float
    errors: list[str]                   # the first few distinct ones, for the excerpt
    server_died: bool = False


class RunDetails(msgspec.Struct, kw_only=True):
    """What the last run saw beyond CanaryMeasurements, for debugging and tests."""
    canary_id: str
    argv: list[str]
    port: int
    pid: int
    pgid: int
    exit_code: int | None = None        # the leader's, if it exited by itself before the stop
    stopped_by: str = ""                # "SIGTERM" | "SIGKILL" | "none" (already gone)
    metrics_before: dict[str, float] = {}
    metrics_after: dict[str, float] = {}
    load: LoadResult | None = None
    log_path: str = ""


# --- parsing what vLLM prints and serves --------------------------------------------------------

_SAMPLE = re.compile(r'^([a-zA-Z_:][\w:]*)(\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\})?\s+(\S+)')
_KV_TOKENS = re.compile(r"\b\w+ KV cache size: ([\d,]+) tokens")   # GPU / CPU / XPU ..., also 0.33's merged line
_CONCURRENCY = re.compile(r"Maximum concurrency for [\d,]+ tokens per request: ([\d.]+)x")
# GPU workers; the CPU worker (0.32) says "Auto set (0.63/8.34) GiB for KV cache on node 0"
_AVAILABLE_KV = re.compile(r"Available KV cache memory: ([\d.]+) ?GiB|Auto set \(([\d.]+)/[\d.]+\) GiB for KV cache")


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {metric name: value}, label sets combined: summed, except `*_perc`
    gauges (a usage fraction per engine), where the highest is kept."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m is None:          # comments, blank lines
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        name = m.group(1)
        out[name] = max(out.get(name, value), value) if name.endswith("_perc") else out.get(name, 0.0) + value
    return out


def vllm_metrics(parsed: dict[str, float]) -> dict[str, float]:
    """The vLLM counters selfheal reads, under stable names, across metric renames."""
    def first(*names: str) -> float:
        return next((parsed[n] for n in names if n in parsed), 0.0)
    return {"preemptions": first("vllm:num_preemptions_total", "vllm:num_preemptions"),
            "kv_cache_usage": first("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
            "waiting": first("vllm:num_requests_waiting"), "running": first("vllm:num_requests_running"),
            "prompt_tokens": first("vllm:prompt_tokens_total"),
            "generation_tokens": first("vllm:generation_tokens_total")}


def read_capacity(log_text: str) -> tuple[int, float, float]:
    """(KV cache tokens, maximum concurrency, available KV GiB) from vLLM's startup log; 0 where absent."""
    kv = [int(x.replace(",", "")) for x in _KV_TOKENS.findall(log_text)]
    conc = [float(x) for x in _CONCURRENCY.findall(log_text)]
    avail = [float(gpu or cpu) for gpu, cpu in _AVAILABLE_KV.findall(log_text)]
    return min(kv, default=0), min(conc, default=0.0), min(avail, default=0.0)


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); 0 for no values."""
    if not values:
        return 0.0
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


# --- the load phase -----------------------------------------------------------------------------

def max_tokens_for(config: ServingConfig, load: LoadSettings) -> int:
    return max(1, min(load.max_tokens, config.max_model_len // 2))


def build_prompts(config: ServingConfig, load: LoadSettings) -> list[str]:
    """`load.requests` prompts cycling through the cap, 3/4, 1/2 and 1/4 of it, in words (see module doc)."""
    cap = min(int(load.prompt_fraction * config.max_model_len),
              config.max_model_len - max_tokens_for(config, load) - PROMPT_RESERVE)
    cap = max(2, cap)
    return [" ".join([str(i)] + [load.word] * (max(2, cap * (4 - i % 4) // 4) - 1)) for i in range(load.requests)]


def _http(host: str, port: int, method: str, path: str, timeout: float) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _error_text(raw: bytes) -> str:
    try:
        body = json.loads(raw)
        error = body.get("error")
        msg = body.get("message") or (error.get("message") if isinstance(error, dict) else error) or raw.decode()
    except (ValueError, AttributeError):
        msg = raw.decode("utf-8", "replace")
    return str(msg).strip()[:500]


def _one_request(host: str, port: int, model: str, prompt: str, max_tokens: int, stream: bool,
                 timeout: float, api_key: str | None = None) -> tuple[float, float | None, int] | str:
    """One completion: (latency ms, TTFT ms or None, completion tokens), or an error string."""
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    t0 = time.monotonic()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("POST", "/v1/completions", body=json.dumps(body),
                     headers={"Content-Type": "application/json", **credentials.bearer(api_key)})
        resp = conn.getresponse()
        if resp.status == 401:   # vLLM's body is {"error": "Unauthorized"}: say so, and nothing of the key
            resp.read()
            return "HTTP 401: unauthorized (the server wants another API key)"
        if resp.status != 200:
            return f"HTTP {resp.status}: {_error_text(resp.read())}"
        if not stream:
            usage = json.loads(resp.read()).get("usage") or {}
            return (time.monotonic() - t0) * 1000, None, int(usage.get("completion_tokens", 0))
        ttft, usage, chunks = None, None, 0
        for raw in resp:       # server-sent events: `data: {...}` lines, ending with `data: [DONE]`
            if time.monotonic() - t0 > timeout:
                return f"timed out after {timeout:.0f} s"
            line = raw.strip()
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                tokens = int(usage["completion_tokens"]) if usage else chunks
                return (time.monotonic() - t0) * 1000, ttft, tokens
            chunk = json.loads(payload)
            if "error" in chunk or chunk.get("object") == "error":
                return f"stream error: {_error_text(payload)}"
            if chunk.get("choices"):
                chunks += 1
                ttft = ttft if ttft is not None else (time.monotonic() - t0) * 1000
            usage = chunk.get("usage") or usage
        return "stream ended before [DONE]"
    except (OSError, http.client.HTTPException, ValueError, KeyError) as e:
        return f"{type(e).__name__}: {e}"
    finally:
        conn.close()


def run_load(host: str, port: int, model: str, config: ServingConfig, load: LoadSettings,
             alive: Callable[[], bool], api_key: str | None = None) -> LoadResult:
    """Send `load.requests` completions from min(max_num_seqs, max_concurrency) threads.

    Requests not sent before the phase's deadline count as failed, and so do those left when
    the server has died (`alive()` is asked after each failure, to stop early)."""
    prompts = build_prompts(config, load)
    max_tokens = max_tokens_for(config, load)
    results: list[tuple | str | None] = [None] * len(prompts)
    lock, stop = threading.Lock(), threading.Event()
    cursor = iter(range(len(prompts)))
    start = time.monotonic()
    deadline = start + load.deadline_s

    def worker() -> None:
        while not stop.is_set():
            with lock:
                i = next(cursor, None)
            if i is None:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                results[i] = "not sent: the load phase's deadline passed"
                continue
            results[i] = _one_request(host, port, model, prompts[i], max_tokens, load.stream,
                                      min(load.request_timeout_s, left), api_key)
            if isinstance(results[i], str) and not alive():
                stop.set()

    threads = [threading.Thread(target=worker, name=f"canary-load-{n}", daemon=True)
               for n in range(max(1, min(config.max_num_seqs, load.max_concurrency, len(prompts))))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - start
    done = [r for r in results if isinstance(r, tuple)]
    errors = [r if r is not None else "not sent: the server died" for r in results if not isinstance(r, tuple)]
    return LoadResult(sent=sum(r is not None for r in results), ok=len(done), failed=len(errors),
                      latencies_ms=[r[0] for r in done], ttfts_ms=[r[1] for r in done if r[1] is not None],
                      completion_tokens=sum(r[2] for r in done), wall_s=wall, errors=list(dict.fromkeys(errors))[:5],
                      server_died=not alive())


# --- the backend --------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{(?:model|port|host)\}")


class VllmCanaryBackend:
    name = "vllm"
    simulated = False

    def __init__(self, command: list[str] | None, model: str, *, host: str = "127.0.0.1",
                 health_timeout_s: float = 600, load: LoadSettings | None = None, env: dict | None = None,
                 grace_s: float = 10, workdir: str | os.PathLike | None = None, health_poll_s: float = 0.1):
        if isinstance(command, str):
            raise TypeError("command must be an argument list, never a shell string")
        # the template's credentials move to the environment here, once: a bad flag is a config
        # error (CredentialError) before any canary runs, and `command` holds no secret
        self.command, self._moved = credentials.split_credentials(command or DEFAULT_COMMAND)
        self.model, self.host = model, host
        self.health_timeout_s, self.grace_s, self.health_poll_s = health_timeout_s, grace_s, health_poll_s
        self.load = load or LoadSettings()
        self.env = dict(env or {})
        self.workdir = Path(workdir) if workdir is not None else None
        self.last_run: RunDetails | None = None
        self._api_key: str | None = None

    def argv(self, config: ServingConfig, port: int) -> list[str]:
        # one pass over each item, not str.format: other braces (JSON flags) stay as written, and
        # a value that itself contains "{host}" or "{port}" is never substituted again
        subst = {"{model}": self.model, "{port}": str(port), "{host}": self.host}
        return [_PLACEHOLDER.sub(lambda m: subst[m.group(0)], item) for item in self.command] + config.cli_args()

    def run(self, config: ServingConfig, started_at: datetime, on_launch: Callable[[Launch], None] | None = None,
            *, canary_id: str | None = None) -> CanaryOutcome:
        """`canary_id` becomes the processes' SELFHEAL_CANARY_ID marker (a fresh id if None), so the
        caller that records the launch can later reap an orphan with `processes.reap_orphan`."""
        t0 = time.monotonic()
        port = free_loopback_port(self.host)
        argv = self.argv(config, port)
        # unbuffered Python output, so a killed canary's last lines still reach the log
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env, **self._moved}
        # the key the load phase presents: kept on the backend, like last_run, never in what it returns
        api_key = self._api_key = credentials.api_key(argv, env)
        with contextlib.ExitStack() as stack:
            folder = self.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="selfheal-canary-")))
            folder.mkdir(parents=True, exist_ok=True)
            log_path = folder / f"canary-{canary_id or 'run'}-{port}.log"
            try:
                child = spawn(argv, env, log_path, canary_id=canary_id, cwd=self.workdir)
            except FileNotFoundError as e:   # the host's problem, not the candidate's: no failed canary to record
                raise RuntimeError(f"cannot start the canary: {argv[0]!r} was not found (install vLLM, or set "
                                   "the deployment's canary command)") from e
            sampler = None
            try:   # from here on, whatever happens, the group is stopped
                details = self.last_run = RunDetails(canary_id=child.canary_id, argv=argv, port=port, pid=child.pid,
                                                     pgid=child.pgid, log_path=str(log_path))
                sampler = PeakRss(child.pgid)
                if on_launch is not None:
                    on_launch(Launch(pid=child.pid, pgid=child.pgid, port=port, command=argv))
                health = self._wait_healthy(child, port, t0 + self.health_timeout_s)
                if health == "healthy":
                    self._measure_load(child, config, details)
            finally:
                peak = sampler.stop() if sampler else 0
                details.exit_code = child.poll()
                details.stopped_by = child.stop(self.grace_s)
            # an old vLLM prints a `--config` YAML's api-key among its "non-default args": neither the
            # text returned nor a log file kept in `workdir` keeps it
            raw = log_path.read_bytes().decode("utf-8", "replace")
            log_text = credentials.redact(raw, credentials.secrets_in(env, api_key))
            if log_text != raw:
                log_path.write_text(log_text, encoding="utf-8")
        duration = time.monotonic() - t0
        m = self._measurements(health, config, log_text, details, peak, duration)
        return CanaryOutcome(measurements=m, log_text=log_text, command=argv,
                             finished_at=started_at + timedelta(seconds=duration))

    def _wait_healthy(self, child: Child, port: int, deadline: float) -> str:
        """"healthy", "exited" (the process ended: a startup failure) or "timeout"."""
        while True:
            if child.poll() is not None:
                return "exited"
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            try:
                if _http(self.host, port, "GET", "/health", min(2.0, left))[0] == 200:
                    return "healthy"
            except (OSError, http.client.HTTPException):
                pass          # not listening yet
            time.sleep(min(self.health_poll_s, max(0.0, deadline - time.monotonic())))

    def _scrape(self, port: int) -> dict[str, float]:
        try:
            status, body = _http(self.host, port, "GET", "/metrics", 10.0)
        except (OSError, http.client.HTTPException):
            return {}
        return vllm_metrics(parse_metrics(body.decode("utf-8", "replace"))) if status == 200 else {}

    def _measure_load(self, child: Child, config: ServingConfig, details: RunDetails) -> None:
        details.metrics_before = self._scrape(details.port)
        load = details.load = run_load(self.host, details.port, self.model, config, self.load,
                                       alive=lambda: child.poll() is None, api_key=self._api_key)
        if not load.server_died and any(not e.startswith("HTTP ") for e in load.errors):
            # a dropped connection is how a dying server looks from outside, a moment before it has exited
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.popen.wait(timeout=_SETTLE_S)
            load.server_died = child.poll() is not None
        # the engine updates its counters after the last response has left, so a scrape taken at
        # once can miss the last requests: scrape until nothing runs or waits (or _SETTLE_S passes)
        settle = time.monotonic() + _SETTLE_S
        while child.poll() is None:
            details.metrics_after = self._scrape(details.port)
            idle = details.metrics_after.get("running", 0) + details.metrics_after.get("waiting", 0) == 0
            if idle or time.monotonic() >= settle:
                break
            time.sleep(0.05)

    def _measurements(self, health: str, config: ServingConfig, log_text: str, d: RunDetails, peak: int,
                      duration: float) -> CanaryMeasurements:
        kv_tokens, concurrency, available = read_capacity(log_text)
        common = dict(kv_cache_tokens=kv_tokens, max_concurrency=concurrency, available_kv_gib=available,
                      peak_memory_gib=round(peak / _GIB, 4), duration_s=round(duration, 3))
        if health != "healthy":
            primary = diagnose(log_text, current=config).primary
            if primary is not None:
                kind, excerpt = primary.kind, "\n".join(primary.evidence)
            elif health == "timeout":
                kind = "health_timeout"
                excerpt = f"/health did not answer 200 within {self.health_timeout_s:g} s\n" + _tail(log_text)
            else:
                kind, excerpt = "server_exited", f"exited with code {d.exit_code}\n" + _tail(log_text)
            return CanaryMeasurements(started=False, passed_load=False, failure_kind=kind,
                                      failure_stage="config" if kind in CONFIG_KINDS else "startup",
                                      excerpt=excerpt, **common)
        load = d.load
        assert load is not None
        preemptions = max(0, round(d.metrics_after.get("preemptions", 0.0) - d.metrics_before.get("preemptions", 0.0)))
        tokens = load.completion_tokens
        if tokens == 0 and d.metrics_after:   # a server that sent no usage: its counters still know
            tokens = round(d.metrics_after["generation_tokens"] - d.metrics_before.get("generation_tokens", 0.0))
        wall = max(load.wall_s, 1e-9)
        measured = dict(throughput_tok_s=round(tokens / wall, 3), requests_per_s=round(load.ok / wall, 4),
                        latency_p50_ms=round(percentile(load.latencies_ms, 50), 3),
                        latency_p99_ms=round(percentile(load.latencies_ms, 99), 3),
                        ttft_p50_ms=round(percentile(load.ttfts_ms, 50), 3), preemptions=preemptions)
        problems = []
        if load.server_died:
            problems.append(f"the server exited (code {d.exit_code}) during the load phase")
        if load.failed > self.load.max_error_ratio * self.load.requests:
            problems.append(f"{load.failed} of {self.load.requests} requests failed: " + "; ".join(load.errors[:3]))
        limit = self.load.max_preemptions_per_request
        storm = limit is not None and preemptions > limit * self.load.requests
        if storm:
            problems.append(f"{preemptions} preemptions for {self.load.requests} requests")
        if not problems:
            return CanaryMeasurements(started=True, passed_load=True, **common, **measured)
        primary = diagnose(log_text, current=config).primary
        kind = primary.kind if primary else ("preemption_storm" if storm and not load.failed else "load_errors")
        excerpt = "\n".join(primary.evidence) if primary else "\n".join(problems)
        return CanaryMeasurements(started=True, passed_load=False, failure_kind=kind, failure_stage="load",
                                  excerpt=excerpt, **common, **measured)


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])
