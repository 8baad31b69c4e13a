"""The fake vLLM's API keys, as vLLM has them: `--api-key` (several keys, or the `--config` YAML),
else VLLM_API_KEY; 401 `{"error":"Unauthorized"}` on the guarded paths without a Bearer key,
/health and /metrics open; and the unredacted `non-default args` line of vLLM before it
redacted credentials there. Then the load phase's client against it: the header sent, and a 401
that says "unauthorized" and nothing of the key."""
from __future__ import annotations

import contextlib
import http.client
import json
import os
import sys
import time
import uuid

from selfheal.edges.credentials import SECRET_ENV
from selfheal.edges.processes import free_loopback_port, spawn
from selfheal.edges.vllm_backend import run_load
from selfheal.schemas.serving import ServingConfig

from .conftest import FAKE, FAST_LOAD, MODEL

KEY, KEY2, ENV_KEY, TOKEN = "sk-fake-key-0001", "sk-fake-key-0002", "sk-env-key-0003", "hf_fake_token_0004"
CONFIG = ServingConfig(gpu_memory_utilization=0.65, max_model_len=8192, max_num_seqs=16, max_num_batched_tokens=2048)


@contextlib.contextmanager
def fake(tmp_path, *flags: str, env: dict | None = None):
    """The fake serving on a free port (yields port and log path); stopped, with its group, after."""
    port = free_loopback_port()
    argv = [sys.executable, str(FAKE), "serve", MODEL, "--host", "127.0.0.1", "--port", str(port), *flags,
            *CONFIG.cli_args()]
    base = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
    log = tmp_path / f"fake-{port}.log"
    child = spawn(argv, {**base, "FAKE_VLLM_LINE_DELAY": "0", **(env or {})}, log, canary_id=f"test-{uuid.uuid4().hex}")
    try:
        deadline = time.monotonic() + 30
        while request(port, "GET", "/health")[0] != 200:
            assert child.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield port, log
    finally:
        child.stop(3)


def request(port: int, method: str, path: str, key: str | None = None, scheme: str = "Bearer") -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"{scheme} {key}"} if key else {})}
    body = json.dumps({"model": MODEL, "prompt": "1 the the", "max_tokens": 2}) if method == "POST" else None
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    except OSError:
        return 0, b""
    finally:
        conn.close()


def non_default_args(log) -> str:
    return next(line for line in log.read_text().splitlines() if "non-default args: " in line)


def test_a_key_guards_the_api_and_leaves_health_and_metrics_open(tmp_path):
    with fake(tmp_path, "--api-key", KEY, "--hf-token", TOKEN) as (port, log):
        assert request(port, "POST", "/v1/completions") == (401, b'{"error":"Unauthorized"}')
        assert request(port, "POST", "/v1/completions", "wrong-key")[0] == 401
        assert request(port, "POST", "/v1/completions", KEY, scheme="Basic")[0] == 401
        assert request(port, "POST", "/v1/completions", KEY)[0] == 200
        assert request(port, "POST", "/v1/completions", KEY, scheme="bearer")[0] == 200   # the scheme is any case
        for path in ("/v1/models", "/v2/anything", "/inference/x", "/cohere/v2/chat"):     # GUARDED_PREFIX
            assert request(port, "GET", path)[0] == 401
        assert request(port, "GET", "/v1/models", KEY)[0] == 404       # let through: the fake serves no such path
        assert request(port, "GET", "/health")[0] == 200
        status, metrics = request(port, "GET", "/metrics")
        assert status == 200 and b"vllm:num_requests_running" in metrics
        assert '"POST /v1/completions HTTP/1.1" 401 Unauthorized' in log.read_text()
        # vLLM before August 2026 printed its non-default args as parsed, credentials included
        line = non_default_args(log)
        assert f"'port': {port}, 'api_key': ['{KEY}'], 'model':" in line
        assert f"'max_model_len': 8192, 'hf_token': '{TOKEN}'" in line


def test_several_keys_and_the_flag_wins_over_the_variable(tmp_path):
    with fake(tmp_path, "--api_key", KEY, KEY2, env={"VLLM_API_KEY": ENV_KEY}) as (port, log):
        assert request(port, "POST", "/v1/completions", KEY)[0] == 200
        assert request(port, "POST", "/v1/completions", KEY2)[0] == 200
        assert request(port, "POST", "/v1/completions", ENV_KEY)[0] == 401
        assert f"'api_key': ['{KEY}', '{KEY2}']" in non_default_args(log)


def test_the_variable_alone_guards_and_is_never_printed(tmp_path):
    with fake(tmp_path, env={"VLLM_API_KEY": ENV_KEY}) as (port, log):
        assert request(port, "POST", "/v1/completions")[0] == 401
        assert request(port, "POST", "/v1/completions", ENV_KEY)[0] == 200
        assert "api_key" not in non_default_args(log) and ENV_KEY not in log.read_text()


def test_the_config_yaml_key_is_a_flag(tmp_path):
    config = tmp_path / "serve.yaml"
    config.write_text(f"max-num-seqs: 8\napi-key: [{KEY}]\nhf_token: {TOKEN}\n")
    with fake(tmp_path, "--config", str(config), env={"VLLM_API_KEY": ENV_KEY}) as (port, log):
        assert request(port, "POST", "/v1/completions", KEY)[0] == 200
        assert request(port, "POST", "/v1/completions", ENV_KEY)[0] == 401
        line = non_default_args(log)
        assert f"'api_key': ['{KEY}']" in line and f"'hf_token': '{TOKEN}'" in line


def test_without_a_key_the_api_is_open_and_a_bare_hf_token_is_the_stored_login(tmp_path):
    with fake(tmp_path, "--hf-token") as (port, log):
        assert request(port, "POST", "/v1/completions")[0] == 200
        line = non_default_args(log)
        assert "'hf_token': True" in line and "api_key" not in line


def test_the_load_phase_presents_the_key_and_a_refusal_never_quotes_it(tmp_path):
    with fake(tmp_path, "--api-key", KEY) as (port, _):
        refused = run_load("127.0.0.1", port, MODEL, CONFIG, FAST_LOAD, alive=lambda: True)
        assert refused.ok == 0 and refused.failed == FAST_LOAD.requests
        assert refused.errors == ["HTTP 401: unauthorized (the server wants another API key)"]
        wrong = run_load("127.0.0.1", port, MODEL, CONFIG, FAST_LOAD, alive=lambda: True, api_key=KEY2)
        assert wrong.errors == refused.errors and KEY2 not in repr(wrong) and KEY not in repr(wrong)
        served = run_load("127.0.0.1", port, MODEL, CONFIG, FAST_LOAD, alive=lambda: True, api_key=KEY)
        assert served.ok == FAST_LOAD.requests and served.errors == [] and KEY not in repr(served)
