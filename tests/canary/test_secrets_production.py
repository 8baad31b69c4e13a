"""Production under `selfheal supervise`, on the fake vLLM: it runs with the deployment's `env`
(the variables its canaries ran with), its `serve_command` credentials travel in its environment
and not on its argv, and the reload's verification probe presents the API key it was started
with -- after a real SIGHUP restart. A probe without the key reads "unauthorized", never the key."""
from __future__ import annotations

import json
import re
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from selfheal.edges.processes import free_loopback_port, group_alive
from selfheal.edges.reload import ServerReloader, probe
from selfheal.edges.supervise import serve_argv, serve_launch, supervise
from selfheal.schemas.config import parse_settings

from .conftest import FAKE, MODEL
from .test_secrets_fake import KEY, TOKEN, fake, request

ENV_KEY = "sk-production-env-key-93c1"
SECRETS = (KEY, ENV_KEY, TOKEN)
YAML = "gpu-memory-utilization: 0.65\nmax-model-len: 8192\nmax-num-seqs: 16\nmax-num-batched-tokens: 2048\n"


def _settings(tmp_path: Path, port: int, flags: list[str]):
    config_file = tmp_path / "prod.yaml"
    config_file.write_text(YAML)
    command = [sys.executable, str(FAKE), "serve", "{model}", "--config", "{config_file}",
               "--host", "127.0.0.1", "--port", str(port), *flags]
    env = {"FAKE_VLLM_SCENARIO": "workstation-12gb-speech", "FAKE_VLLM_LINE_DELAY": "0",
           "SELFHEAL_TEST_MARK": "production", "VLLM_API_KEY": ENV_KEY}
    return parse_settings(f'''
[deployments.prod]
canary_backend = "vllm"
model = "fake-model"
config_file = {json.dumps(str(config_file))}
health_url = "http://127.0.0.1:{port}/health"
serve_command = {json.dumps(command)}
env = {{{", ".join(f"{k} = {json.dumps(v)}" for k, v in env.items())}}}
[deployments.prod.reload]
method = "signal"
pidfile = {json.dumps(str(tmp_path / "supervise.pid"))}
[deployments.prod.verify]
deadline_s = 20
probe_requests = 2
''').deployments["prod"]


def _no_secret(text: str | bytes) -> bool:
    text = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return not any(s in text for s in SECRETS)


def test_serve_launch_layers_the_deployment_env_and_moves_the_credentials(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFHEAL_TEST_BASE", "from-selfheal")
    settings = _settings(tmp_path, 8000, ["--api-key", KEY, "--hf-token", TOKEN])
    argv, env = serve_launch(settings)
    assert argv == serve_argv(settings) and argv[5] == settings.config_file and _no_secret(" ".join(argv))
    assert env["SELFHEAL_TEST_BASE"] == "from-selfheal" and env["SELFHEAL_TEST_MARK"] == "production"
    assert env["VLLM_API_KEY"] == KEY and env["HF_TOKEN"] == TOKEN       # the flag wins over the deployment's env


@pytest.mark.parametrize("flags, key", [(["--hf-token", TOKEN], ENV_KEY),                 # the deployment's env key
                                        (["--api-key", KEY, "--hf-token", TOKEN], KEY)])  # serve_command's, moved
def test_supervised_production_runs_with_the_env_and_verifies_with_the_key(tmp_path, monkeypatch, flags, key):
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    settings = _settings(tmp_path, free_loopback_port(), flags)
    port = int(settings.health_url.rsplit(":", 1)[1].split("/")[0])
    lines: list[str] = []
    stop, seen = threading.Event(), {}

    def started_pids() -> list[int]:
        return [int(m.group(1)) for line in list(lines) if (m := re.match(r"started pid (\d+):", line))]

    def check() -> None:   # supervise must own the main thread (signal handlers); this acts beside it
        try:
            deadline = time.monotonic() + 30
            while not any(line.startswith("healthy") for line in list(lines)):
                assert time.monotonic() < deadline, lines
                time.sleep(0.05)
            pid = started_pids()[0]
            seen["cmdline"] = Path(f"/proc/{pid}/cmdline").read_bytes()
            seen["environ"] = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            seen["keyless"] = request(port, "POST", "/v1/completions")
            # a real reload: SIGHUP to this process (the pidfile's), supervise restarts the server
            seen["verify"] = ServerReloader(settings).reload_and_verify("signal", datetime.now(timezone.utc))
        except BaseException as exc:   # noqa: BLE001 -- reported by the test below
            seen["error"] = exc
        finally:
            stop.set()

    helper = threading.Thread(target=check)
    helper.start()
    code = supervise(settings, report=lines.append, stop=stop, grace_s=3,
                     pidfile=settings.reload.pidfile)
    helper.join(60)
    assert "error" not in seen, seen.get("error")
    assert code == 0
    assert _no_secret(seen["cmdline"]) and seen["cmdline"].startswith(sys.executable.encode())
    assert b"SELFHEAL_TEST_MARK=production" in seen["environ"]            # the deployment's env reached it
    assert f"VLLM_API_KEY={key}".encode() in seen["environ"] and f"HF_TOKEN={TOKEN}".encode() in seen["environ"]
    assert seen["keyless"] == (401, b'{"error":"Unauthorized"}')
    healthy, detail = seen["verify"].healthy, seen["verify"].detail
    assert healthy, detail
    assert detail.startswith("2/2 completions ok") and _no_secret(detail)
    assert len(started_pids()) == 2                                        # restarted by the SIGHUP
    assert all(_no_secret(line) for line in lines)
    assert not any(group_alive(pid) for pid in started_pids())


def test_a_probe_without_the_key_says_unauthorized_and_nothing_of_the_key(tmp_path):
    with fake(tmp_path, "--api-key", KEY) as (port, _):
        ok, detail = probe(f"http://127.0.0.1:{port}", MODEL, requests=2, timeout_s=10)
        assert not ok and "HTTP 401: unauthorized" in detail and _no_secret(detail)
        ok, detail = probe(f"http://127.0.0.1:{port}", MODEL, requests=2,
                           timeout_s=10, api_key=KEY)
        assert ok and _no_secret(detail)
