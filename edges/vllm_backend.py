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
3. a load phase through the OpenAI completions API, short and long prompts mixed, while `/metrics`
   is scraped all through it, until nothing runs or waits (edges/vllm_measure.py `LoadWatch`); a
   load phase fails on more failed requests than `max_error_ratio` allows, when the server dies,
   or when production's /metrics watcher would report a symptom of this load served back to back
   (preemptions, KV cache pressure, refusals, queue growth, at its own thresholds: `watch`). With an API key
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
  blocks. Prompts cycle through long (up to `prompt_fraction` of max_model_len, default all of
  it, never closer than max_tokens + 8 tokens to it, so the approximation has room for BOS and
  odd tokens), short (a sixteenth of that), half and short again; `longest_prompt_tokens` sets
  the long ones whatever the candidate's max_model_len, so one that refuses them shows it;
- TTFT is the time to the first streamed chunk (`stream: true`; 0 with stream off); throughput is completion
  tokens (from `usage`, else one per streamed chunk) over the load phase's wall time;
- peak memory is the summed RSS of the canary's process group, sampled from /proc: on a GPU
  host this is host memory, not GPU memory (GPU peak comes from NVML, a later step);
- gpu_headroom_gib is what the server's startup lines say it left of its device (GPU: free at
  startup less requested; CPU build: the node's available memory less the worker's request or
  KV space): edges/vllm_measure.py `read_headroom`, its source recorded as headroom_source;
- warm_start: whether the server loaded its compiled graphs from a compile cache shared with
  production (`compile_cache`, VLLM_CACHE_ROOT), from its log (vllm_measure.compile_cache_state);
  startup_s is the time from the start to /health answering 200;
- KV cache tokens, maximum concurrency and available KV memory are read from vLLM's startup
  log; with several lines (workers, DP engines) the smallest is kept, as the simulator does.
"""
from __future__ import annotations

import contextlib
import http.client
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
from selfheal.edges.metrics_watch import MetricsWatch
from selfheal.edges.processes import Child, PeakRss, free_loopback_port, spawn
from selfheal.edges.sim.metrics import SYMPTOM_KINDS, symptom_kind
from selfheal.edges.vllm_http import one_request as _one_request, plain_request as _http
from selfheal.edges.vllm_measure import (  # noqa: F401  (parse_metrics ... are this module's API too)
    LoadWatch, compile_cache_state, host_available_gib, parse_metrics, percentile, read_capacity, read_headroom,
    summary, vllm_metrics, watcher_symptoms,
)
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
    prompt_fraction: float = 1.0        # longest prompt, as a fraction of max_model_len (less max_tokens + 8)
    #: the longest prompt production must serve, in tokens: the long prompts, whatever max_model_len
    longest_prompt_tokens: int | None = None
    max_error_ratio: float = 0.0        # failed requests tolerated, as a fraction of `requests`
    request_timeout_s: float = 120.0
    deadline_s: float = 600.0           # the whole load phase
    stream: bool = True                 # needed for TTFT
    word: str = "the"
    #: fail the load phase on more preemptions than this per request (None: preemptions are only measured)
    max_preemptions_per_request: float | None = None
    #: judge the load as production's /metrics watcher does (at its default thresholds); False: only measure
    watch: bool = True
    scrape_period_s: float = 0.5        # /metrics during the load phase

    def __post_init__(self) -> None:
        checks = [(1 <= self.requests <= MAX_REQUESTS, f"requests must be 1..{MAX_REQUESTS}"),
                  (self.max_concurrency >= 1 and self.max_tokens >= 1, "max_concurrency and max_tokens must be >= 1"),
                  (0 < self.prompt_fraction <= 1, "prompt_fraction must be in (0, 1]"),
                  (0 <= self.max_error_ratio <= 1, "max_error_ratio must be in [0, 1]"),
                  (self.request_timeout_s > 0 and self.deadline_s > 0, "timeouts must be positive"),
                  (len(self.word.split()) == 1, "word must be one word"),
                  (self.longest_prompt_tokens is None or self.longest_prompt_tokens >= 2,
                   "longest_prompt_tokens must be >= 2"),
                  (self.scrape_period_s > 0, "scrape_period_s must be positive")]
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
    refused: int = 0                    # HTTP 400s: vLLM refusing a prompt (too long for max_model_len)
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
    startup_s: float = 0.0              # from the start to /health answering 200
    available_before_gib: float | None = None   # the host's MemAvailable just before the start
    timeline: list = []                 # the load phase's /metrics, as metrics_watch.Scrape
    symptoms: list[str] = []            # what production's watcher would report of this load


# --- the load phase -----------------------------------------------------------------------------

def max_tokens_for(config: ServingConfig, load: LoadSettings) -> int:
    return max(1, min(load.max_tokens, config.max_model_len // 2))


def build_prompts(config: ServingConfig, load: LoadSettings) -> list[str]:
    """`load.requests` prompts cycling through long (the cap), short, half and short, in words
    (see module doc): long ones find a KV cache too small for full-length requests, short ones
    keep many sequences running at once, as production's mix does."""
    cap = load.longest_prompt_tokens or min(int(load.prompt_fraction * config.max_model_len),
                                            config.max_model_len - max_tokens_for(config, load) - PROMPT_RESERVE)
    cap = max(2, cap)
    sizes = (cap, max(2, cap // 16), max(2, cap // 2), max(2, cap // 16))
    return [" ".join([str(i)] + [load.word] * (sizes[i % 4] - 1)) for i in range(load.requests)]


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
                      refused=sum(e.startswith("HTTP 400") for e in errors),
                      server_died=not alive())


# --- the backend --------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{(?:model|port|host)\}")


class VllmCanaryBackend:
    name = "vllm"
    simulated = False

    def __init__(self, command: list[str] | None, model: str, *, host: str = "127.0.0.1",
                 health_timeout_s: float = 600, load: LoadSettings | None = None, env: dict | None = None,
                 grace_s: float = 10, workdir: str | os.PathLike | None = None, health_poll_s: float = 0.1,
                 compile_cache: str | os.PathLike | None = None, watch: MetricsWatch | None = None):
        """`compile_cache`: production's VLLM_CACHE_ROOT, so a canary of the same model and vLLM
        version starts from production's compiled graphs (edges/vllm_measure.py); None leaves the
        environment's (vLLM's default ~/.cache/vllm is shared already by the same user on the same
        host). `watch`: production's /metrics watcher, whose thresholds judge the load phase."""
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
        if compile_cache is not None:   # an explicit VLLM_CACHE_ROOT in `env` wins: the deployment said so
            self.env.setdefault("VLLM_CACHE_ROOT", str(compile_cache))
        self.watch = watch
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
            # what the host had free before the canary: the CPU build prints no free memory on success
            available_before = host_available_gib()
            try:
                child = spawn(argv, env, log_path, canary_id=canary_id, cwd=self.workdir)
            except FileNotFoundError as e:   # the host's problem, not the candidate's: no failed canary to record
                raise RuntimeError(f"cannot start the canary: {argv[0]!r} was not found (install vLLM, or set "
                                   "the deployment's canary command)") from e
            sampler = None
            try:   # from here on, whatever happens, the group is stopped
                details = self.last_run = RunDetails(canary_id=child.canary_id, argv=argv, port=port, pid=child.pid,
                                                     pgid=child.pgid, log_path=str(log_path),
                                                     available_before_gib=available_before)
                sampler = PeakRss(child.pgid)
                if on_launch is not None:
                    on_launch(Launch(pid=child.pid, pgid=child.pgid, port=port, command=argv))
                health = self._wait_healthy(child, port, t0 + self.health_timeout_s)
                details.startup_s = round(time.monotonic() - t0, 3)
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
        # what production's watcher would report follows the server's own output, as the simulator's
        # harness adds it (edges/sim_backend.with_symptoms): the observer reads the canary's incident
        log_text += "".join(f"{line}\n" for line in details.symptoms)
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

    def _scrape_text(self, port: int) -> str | None:
        try:
            status, body = _http(self.host, port, "GET", "/metrics", 10.0)
        except (OSError, http.client.HTTPException):
            return None
        return body.decode("utf-8", "replace") if status == 200 else None

    def _scrape(self, port: int) -> dict[str, float]:
        text = self._scrape_text(port)
        return vllm_metrics(parse_metrics(text)) if text is not None else {}

    def _measure_load(self, child: Child, config: ServingConfig, details: RunDetails) -> None:
        details.metrics_before = self._scrape(details.port)
        timeline = LoadWatch(lambda: self._scrape_text(details.port), self.load.scrape_period_s)
        try:
            self._load_and_settle(child, config, details)
        finally:
            details.timeline = timeline.stop()
        if self.load.watch:
            details.symptoms = watcher_symptoms(details.timeline, MetricsWatch(**self._watch_settings()))

    def _watch_settings(self) -> dict:
        """Production's watcher's thresholds (a fresh watch per canary: it keeps history)."""
        w = self.watch or MetricsWatch()
        return dict(window_s=w.window_s, preemption_rate=w.preemption_rate, kv_usage_threshold=w.kv_usage_threshold,
                    sustain_scrapes=w.sustain_scrapes, queue_growth=w.queue_growth, refusal_rate=w.refusal_rate)

    def _load_and_settle(self, child: Child, config: ServingConfig, details: RunDetails) -> None:
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
        headroom, source = read_headroom(log_text, d.available_before_gib, peak / _GIB)
        common = dict(kv_cache_tokens=kv_tokens, max_concurrency=concurrency, available_kv_gib=available,
                      peak_memory_gib=round(peak / _GIB, 4), duration_s=round(duration, 3),
                      gpu_headroom_gib=headroom, headroom_source=source, warm_start=compile_cache_state(log_text),
                      startup_s=d.startup_s)
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
        seen = summary(d.timeline, self._watch_settings()["kv_usage_threshold"])
        # a refusal is seen twice: the 4xx the load got back, and vLLM's http_requests_total
        refused = max(round(seen["refused"]), load.refused)
        words = [len(p.split()) for p in build_prompts(config, self.load)]
        measured = dict(throughput_tok_s=round(tokens / wall, 3), requests_per_s=round(load.ok / wall, 4),
                        latency_p50_ms=round(percentile(load.latencies_ms, 50), 3),
                        latency_p99_ms=round(percentile(load.latencies_ms, 99), 3),
                        ttft_p50_ms=round(percentile(load.ttfts_ms, 50), 3), preemptions=preemptions,
                        load_s=round(load.wall_s, 3), preemptions_per_s=round(preemptions / wall, 4),
                        peak_kv_usage=seen["peak_kv_usage"], kv_full_share=seen["kv_full_share"],
                        peak_waiting=seen["peak_waiting"], rejected_requests=refused,
                        refusals_per_s=round(refused / wall, 4), prompt_tokens_min=min(words, default=0),
                        prompt_tokens_max=max(words, default=0), metrics_symptoms=tuple(d.symptoms))
        problems = []
        if load.server_died:
            problems.append(f"the server exited (code {d.exit_code}) during the load phase")
        if load.failed > self.load.max_error_ratio * self.load.requests:
            problems.append(f"{load.failed} of {self.load.requests} requests failed: " + "; ".join(load.errors[:3]))
        limit = self.load.max_preemptions_per_request
        storm = limit is not None and preemptions > limit * self.load.requests
        if storm:
            problems.append(f"{preemptions} preemptions for {self.load.requests} requests")
        problems += d.symptoms[:1]
        if not problems:
            return CanaryMeasurements(started=True, passed_load=True, **common, **measured)
        primary = diagnose(log_text, current=config).primary
        kind = primary.kind if primary else ("preemption_storm" if storm and not load.failed else "load_errors")
        if d.symptoms and not load.failed and not load.server_died and not storm:
            # the requests all came back: what fails the candidate is production's symptom itself, unless
            # the observer reads a runtime failure of its own in the log (vLLM's preemption warnings beside
            # the watcher's KV line): the canary's incident is that reading, so the kind must be too
            if primary is None or primary.kind not in SYMPTOM_KINDS.values():
                kind, primary = symptom_kind(d.symptoms[0]) or kind, None
        elif primary is None and load.failed and load.refused == load.failed and not load.server_died:
            kind = "requests_rejected"   # every failure a refusal (too long): production's refusal symptom
        excerpt = "\n".join(primary.evidence) if primary else "\n".join(problems)
        return CanaryMeasurements(started=True, passed_load=False, failure_kind=kind, failure_stage="load",
                                  excerpt=excerpt, **common, **measured)


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])
