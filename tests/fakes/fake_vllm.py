"""A faithful fake of `vllm serve` for the default test tier (the real one runs in tests/realvllm).

    python tests/fakes/fake_vllm.py serve MODEL --host H --port P --gpu-memory-utilization U \
        --max-model-len L --max-num-seqs S --max-num-batched-tokens T [--enforce-eager]

Its "hardware" is a simulator scenario (env FAKE_VLLM_SCENARIO, default workstation-12gb-speech):
startup prints the simulator's log (vLLM's own wording) line by line; a simulated startup failure
prints the traceback tail and exits 1, as vLLM does. Otherwise it serves, like vLLM's OpenAI
server: GET /health, GET /metrics (Prometheus text), POST /v1/completions (JSON or SSE stream),
with at most max_num_seqs requests running at once and prompt+completion bounded by
max_model_len (HTTP 400 in vLLM's wording). A prompt's tokens are its whitespace-separated words.

API keys as vLLM has them: `--api-key K [K2 ...]` (also `api-key:` in the `--config` YAML), else
VLLM_API_KEY from the environment (vllm/entrypoints/openai/api_server.py, `build_app`: the flag
wins). With a key, a request under /v1, /v2, /inference or /cohere without
`Authorization: Bearer <one of the keys>` gets HTTP 401 `{"error":"Unauthorized"}`; /health and
/metrics stay open (vllm/entrypoints/serve/utils/server_utils.py, AuthenticationMiddleware,
GUARDED_PREFIX). Startup prints `non-default args: {...}` unredacted, as vLLM did before it
redacted api_key and hf_token there (`redact_sensitive_args`): `'api_key': [...]` when keys come
from flags or the YAML (a VLLM_API_KEY key is no argument, so vLLM never printed it), and
`'hf_token': ...` when `--hf-token` is given. Flag names take `_` for `-`, as vLLM's
FlexibleArgumentParser allows.

Test knobs (env): FAKE_VLLM_IGNORE_SIGTERM=1, FAKE_VLLM_SPAWN_CHILD=1 (a grandchild in the same
group; =setsid: one in a session of its own, which leaves the group, as a daemonizing helper
does), FAKE_VLLM_STARTUP_DELAY=s, FAKE_VLLM_CRASH_AFTER_REQUESTS=N (exit when request N+1
arrives), FAKE_VLLM_TOKEN_DELAY=s per generated token, FAKE_VLLM_LINE_DELAY=s per log line,
FAKE_VLLM_PREEMPTIONS_BASE=n (counter value at start), FAKE_VLLM_PREEMPT_EVERY=k (one
preemption per k finished requests, on top of the simulated ones), FAKE_VLLM_LAUNCH_LOG=path
(one line appended per server started: pid and arguments).
"""
from __future__ import annotations

import argparse
import ast
import hmac
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml

if os.environ.get("FAKE_VLLM_LAUNCH_LOG") and __name__ == "__main__":
    # one line per server started, for tests that count effects: written before the imports
    # below, so a server stopped while it is still starting is counted too
    with open(os.environ["FAKE_VLLM_LAUNCH_LOG"], "a") as journal:
        journal.write(f"{os.getpid()} {' '.join(sys.argv[1:])}\n")

from selfheal.edges.sim import load_scenario, simulate  # noqa: E402
from selfheal.edges.sim import logtext as lt  # noqa: E402
from selfheal.schemas.serving import ServingConfig  # noqa: E402

ENV = os.environ.get
TOKEN_DELAY = float(ENV("FAKE_VLLM_TOKEN_DELAY", "0.002"))
PREFILL_DELAY = 0.00001          # seconds per prompt token: long prompts cost a little, as in vLLM
PREFIX = f"(APIServer pid={os.getpid()})"
#: the paths vLLM's AuthenticationMiddleware guards (server_utils.py GUARDED_PREFIX)
GUARDED_PREFIX = ("/v1", "/v2", "/inference", "/cohere")
UNAUTHORIZED = b'{"error":"Unauthorized"}'     # starlette's JSONResponse: compact separators


def say(line: str) -> None:
    print(line, flush=True)


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="vllm")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("model")
    s.add_argument("--host", default="0.0.0.0")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--gpu-memory-utilization", type=float)
    s.add_argument("--max-model-len", type=int)
    s.add_argument("--max-num-seqs", type=int)
    s.add_argument("--max-num-batched-tokens", type=int)
    s.add_argument("--enforce-eager", action="store_true")
    s.add_argument("--config", help="a YAML of flag values, as `vllm serve --config` reads; flags override it")
    s.add_argument("--api-key", nargs="+")                      # vLLM: list[str] | None
    s.add_argument("--hf-token", type=str, nargs="?", const=True)   # vLLM: a bare flag means the stored login
    # vLLM has hundreds of flags; the rest do not matter here
    args, _unknown = p.parse_known_args([_dashed(a) for a in argv])
    return args


def _dashed(arg: str) -> str:
    """vLLM's FlexibleArgumentParser takes `--api_key` for `--api-key`."""
    if not arg.startswith("--"):
        return arg
    name, eq, value = arg.partition("=")
    return name.replace("_", "-") + eq + value


def yaml_flags(path: str) -> dict:
    """The `--config` YAML's keys, named as flags' dests (`api-key` -> `api_key`)."""
    with open(path, encoding="utf-8") as f:
        raw = yaml.safe_load(f) or {}
    return {str(k).replace("-", "_"): v for k, v in raw.items()} if isinstance(raw, dict) else {}


def shown_args(line: str, api_key: list[str] | None, hf_token) -> str:
    """The simulator's `non-default args: {...}` line with the credential flags vLLM would list,
    where its parser has them: api_key among the frontend's flags after port, hf_token in the
    model group after max_model_len."""
    head, sep, tail = line.partition("non-default args: ")
    out = {}
    for key, value in ast.literal_eval(tail).items():
        out[key] = value
        if key == "port" and api_key is not None:
            out["api_key"] = api_key
        if key == "max_model_len" and hf_token is not None:
            out["hf_token"] = hf_token
    return head + sep + str(out)


class State:
    """What the engine counts, as /metrics shows it."""

    def __init__(self, cfg: ServingConfig, sim, model: str):
        self.cfg, self.sim, self.model = cfg, sim, model
        self.lock = threading.Lock()
        self.slots = threading.BoundedSemaphore(cfg.max_num_seqs)   # the scheduler's running batch
        self.arrived = self.finished = self.running = self.waiting = 0
        self.held = 0                    # KV tokens the running requests hold (prompt + completion)
        self.prompt_tokens = self.generation_tokens = 0
        self.base = int(ENV("FAKE_VLLM_PREEMPTIONS_BASE", "0"))
        self.every = int(ENV("FAKE_VLLM_PREEMPT_EVERY", "0"))
        crash = ENV("FAKE_VLLM_CRASH_AFTER_REQUESTS")
        self.crash_after = int(crash) if crash else None

    def preemptions(self) -> int:
        # the simulated load's preemptions, spread over the requests it served
        simulated = self.sim.preemptions * min(1.0, self.finished / max(1, self.sim.requests_completed))
        return self.base + int(simulated) + (self.finished // self.every if self.every else 0)

    def metrics(self) -> str:
        labels = f'engine="0",model_name="{self.model}"'
        with self.lock:
            # as vLLM's gauge: the blocks the running requests hold over all blocks, in tokens here
            kv = min(1.0, self.held / max(1, self.sim.kv_cache_tokens))
            rows = [("vllm:num_requests_running", "gauge", self.running),
                    ("vllm:num_requests_waiting", "gauge", self.waiting),
                    ("vllm:kv_cache_usage_perc", "gauge", kv),
                    ("vllm:num_preemptions_total", "counter", self.preemptions()),
                    ("vllm:prompt_tokens_total", "counter", self.prompt_tokens),
                    ("vllm:generation_tokens_total", "counter", self.generation_tokens)]
        out = []
        for name, kind, value in rows:
            out += [f"# HELP {name} {name}", f"# TYPE {name} {kind}", f"{name}{{{labels}}} {float(value)}"]
        return "\n".join(out) + "\n"


class Handler(BaseHTTPRequestHandler):
    state: State
    tokens: list[str] = []           # the API keys; none: no authentication, as in vLLM
    server_version = "uvicorn"

    def log_message(self, fmt, *args):  # uvicorn's access line instead of http.server's
        pass

    def _access(self, code: int, phrase: str) -> None:
        host, port = self.client_address[:2]
        say(f'{PREFIX} INFO:     {host}:{port} - "{self.command} {self.path} HTTP/1.1" {code} {phrase}')

    def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self._access(code, self.responses[code][0])

    def _error(self, code: int, message: str) -> None:
        body = {"object": "error", "message": message, "type": "BadRequestError" if code == 400 else "NotFoundError",
                "param": None, "code": code}
        self._send(code, json.dumps(body).encode())

    def _refused(self) -> bool:
        """vLLM's AuthenticationMiddleware: a guarded path without a valid Bearer key gets 401."""
        if not self.tokens or not self.path.startswith(GUARDED_PREFIX):
            return False
        scheme, _, param = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() == "bearer" and any(hmac.compare_digest(param.encode(), t.encode()) for t in self.tokens):
            return False
        self.rfile.read(int(self.headers.get("Content-Length", "0")))   # read, so closing sends no reset
        self._send(401, UNAUTHORIZED)
        return True

    def do_GET(self):
        if self._refused():
            return
        if self.path == "/health":
            self._send(200, b"", "text/plain")
        elif self.path == "/metrics":
            self._send(200, self.state.metrics().encode(), "text/plain; version=0.0.4")
        else:
            self._error(404, "Not Found")

    def do_POST(self):
        st = self.state
        if self._refused():
            return
        if self.path != "/v1/completions":
            return self._error(404, "Not Found")
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
        with st.lock:
            st.arrived += 1
            if st.crash_after is not None and st.arrived > st.crash_after:
                crash()
        if body.get("model") != st.model:
            return self._error(404, f"The model `{body.get('model')}` does not exist.")
        prompt = body.get("prompt", "")
        n_prompt = len(prompt) if isinstance(prompt, list) else len(str(prompt).split())
        max_tokens = int(body.get("max_tokens") or 16)
        limit = st.cfg.max_model_len
        if n_prompt + max_tokens > limit:
            return self._error(400, f"This model's maximum context length is {limit} tokens. However, you requested "
                               f"{n_prompt + max_tokens} tokens ({n_prompt} in the messages, {max_tokens} in the "
                               "completion). Please reduce the length of the messages or completion.")
        with st.lock:
            st.waiting += 1
        with st.slots:
            with st.lock:
                st.waiting -= 1
                st.running += 1
                st.held += n_prompt + max_tokens
            try:
                self._generate(body, n_prompt, max_tokens)
            finally:
                with st.lock:
                    st.running -= 1
                    st.held -= n_prompt + max_tokens
                    st.finished += 1
                    st.prompt_tokens += n_prompt
                    st.generation_tokens += max_tokens

    def _generate(self, body: dict, n_prompt: int, max_tokens: int) -> None:
        rid, now = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        usage = {"prompt_tokens": n_prompt, "completion_tokens": max_tokens, "total_tokens": n_prompt + max_tokens}
        head = {"id": rid, "object": "text_completion", "created": now, "model": self.state.model}
        time.sleep(n_prompt * PREFILL_DELAY)
        if not body.get("stream"):
            time.sleep(max_tokens * TOKEN_DELAY)
            choice = {"index": 0, "text": " ok" * max_tokens, "logprobs": None, "finish_reason": "length",
                      "stop_reason": None}
            return self._send(200, json.dumps({**head, "choices": [choice], "usage": usage}).encode())
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.end_headers()
        self._access(200, "OK")
        for i in range(max_tokens):
            time.sleep(TOKEN_DELAY)
            done = i == max_tokens - 1
            choice = {"index": 0, "text": " ok", "logprobs": None, "finish_reason": "length" if done else None,
                      "stop_reason": None}
            self.wfile.write(b"data: " + json.dumps({**head, "choices": [choice]}).encode() + b"\n\n")
            self.wfile.flush()
        if (body.get("stream_options") or {}).get("include_usage"):
            self.wfile.write(b"data: " + json.dumps({**head, "choices": [], "usage": usage}).encode() + b"\n\n")
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


def crash() -> None:
    """The engine dies mid-load: vLLM's API server reports the dead engine and exits."""
    say(f"{PREFIX} ERROR {lt.Log().stamp()} [async_llm.py:480] AsyncLLM output_handler failed.")
    say(f"{PREFIX} vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. "
        "See stack trace (above) for the root cause.")
    os._exit(1)


def main(argv: list[str]) -> int:
    args = parse(argv)
    if ENV("FAKE_VLLM_IGNORE_SIGTERM") == "1":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)   # inherited by the grandchild too
    else:
        # os.write, not print: a handler that prints while the main thread prints would be a reentrant call
        signal.signal(signal.SIGTERM, lambda *_: (os.write(1, f"{PREFIX} INFO:     Shutting down\n".encode()),
                                                  os._exit(0)))
    if ENV("FAKE_VLLM_SPAWN_CHILD") in ("1", "setsid"):
        # an engine-core-like grandchild in the same process group, which outlives us unless the group is
        # stopped; with "setsid" it leaves the group and the session, so no killpg of ours reaches it
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"],
                         start_new_session=ENV("FAKE_VLLM_SPAWN_CHILD") == "setsid")
    scenario = load_scenario(ENV("FAKE_VLLM_SCENARIO", "workstation-12gb-speech"))
    cur = scenario.current
    api_key, hf_token = args.api_key, args.hf_token
    if args.config:   # vLLM: the file's values stand where no flag is given
        from selfheal.schemas.vllm_yaml import read_serving_values
        cur = cur.changed(**read_serving_values(args.config))
        extra = yaml_flags(args.config)
        if api_key is None and extra.get("api_key") not in (None, "", []):
            value = extra["api_key"]
            api_key = [str(k) for k in value] if isinstance(value, list) else [str(value)]
        if hf_token is None and extra.get("hf_token") not in (None, ""):
            hf_token = extra["hf_token"] if extra["hf_token"] is True else str(extra["hf_token"])
    Handler.tokens = [key for key in (api_key or [ENV("VLLM_API_KEY")]) if key]
    cfg = ServingConfig(
        gpu_memory_utilization=args.gpu_memory_utilization or cur.gpu_memory_utilization,
        max_model_len=args.max_model_len or cur.max_model_len, max_num_seqs=args.max_num_seqs or cur.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens or cur.max_num_batched_tokens,
        enforce_eager=args.enforce_eager or cur.enforce_eager)
    sim = simulate(scenario, cfg)
    lines = sim.log_text.splitlines()
    if sim.started:   # the load phase's lines are the simulator's, not ours: ours come from real requests
        lines = lines[:next(i for i, x in enumerate(lines) if x.endswith("Application startup complete.")) + 1]
    delay = float(ENV("FAKE_VLLM_LINE_DELAY", "0.002"))
    for i, line in enumerate(lines):
        line = line.replace(f"127.0.0.1:{lt.PORT}", f"{args.host}:{args.port}").replace(
            f"'port': {lt.PORT}", f"'port': {args.port}")
        say(shown_args(line, api_key, hf_token) if "non-default args: " in line else line)
        if i == 0:
            time.sleep(float(ENV("FAKE_VLLM_STARTUP_DELAY", "0")))
        time.sleep(delay)
    if not sim.started:
        return 1
    Handler.state = State(cfg, sim, args.model)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    server.serve_forever(poll_interval=0.05)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
