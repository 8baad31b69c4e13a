"""A canary whose command template carries `--api-key` and `--hf-token`, on the fake vLLM (which
honours keys as vLLM does): the secrets reach the server through its environment only, never its
argv (`ps`, /proc/<pid>/cmdline) nor anything the backend returns; the load phase presents the
key, so it passes, while a request without it is refused."""
from __future__ import annotations

import http.client
import json
from datetime import datetime, timezone
from pathlib import Path

import msgspec
import pytest

from selfheal.edges.processes import group_members
from selfheal.edges.vllm_backend import VllmCanaryBackend
from selfheal.schemas.serving import ServingConfig

from .conftest import FAKE_COMMAND, FAST_LOAD, MODEL

T0 = datetime(2026, 11, 24, 6, 0, tzinfo=timezone.utc)
GOOD = ServingConfig(gpu_memory_utilization=0.65, max_model_len=8192, max_num_seqs=16, max_num_batched_tokens=2048)
KEY, ENV_KEY, TOKEN = "sk-template-key-7f3a9c", "sk-deployment-env-key-51d2", "hf_template_token_b8e4"
SECRETS = (KEY, ENV_KEY, TOKEN)


def _proc(pid: int, name: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes()
    except OSError:
        return b""


def _ask(port: int, method: str, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        body = json.dumps({"model": MODEL, "prompt": "1 the", "max_tokens": 2}) if method == "POST" else None
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class _Spying(VllmCanaryBackend):
    """While the canary serves (before its load phase): every process of its group as /proc shows
    it, and what the server answers a client that brings no key."""

    def _measure_load(self, child, config, details):
        self.cmdlines = {pid: _proc(pid, "cmdline") for pid in group_members(child.pgid)}
        self.environ = _proc(child.pid, "environ").split(b"\0")
        self.keyless = {path: _ask(details.port, method, path)
                        for method, path in (("POST", "/v1/completions"), ("GET", "/health"), ("GET", "/metrics"))}
        super()._measure_load(child, config, details)


def _no_secret(blob) -> bool:
    text = blob if isinstance(blob, (str, bytes)) else repr(blob)
    text = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return not any(s in text for s in SECRETS)


@pytest.mark.parametrize("flags", [["--api-key", KEY, "--hf-token", TOKEN],
                                   [f"--api-key={KEY}", f"--hf_token={TOKEN}"]])
def test_credentials_travel_in_the_environment_and_the_load_phase_presents_the_key(canary_ids, flags, monkeypatch):
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    b = _Spying([*FAKE_COMMAND, *flags], MODEL, load=FAST_LOAD, health_timeout_s=30, grace_s=3,
                env={"FAKE_VLLM_SCENARIO": "workstation-12gb-speech", "FAKE_VLLM_SPAWN_CHILD": "1",
                     "VLLM_API_KEY": ENV_KEY})
    launched = {}

    def on_launch(launch):
        launched["launch"] = launch
        launched["cmdlines"] = {pid: _proc(pid, "cmdline") for pid in [launch.pid, *group_members(launch.pgid)]}

    out = b.run(GOOD, T0, on_launch, canary_id=canary_ids())
    m = out.measurements
    assert m.started and m.passed_load, m.excerpt                  # every request carried the key
    assert b.last_run.load.ok == FAST_LOAD.requests
    # /proc: the leader at launch, then the server and its grandchild while serving -- no secret anywhere
    assert launched["cmdlines"][launched["launch"].pid].startswith(FAKE_COMMAND[0].encode())
    assert all(_no_secret(c) for c in launched["cmdlines"].values())
    assert len(b.cmdlines) == 2 and all(c and _no_secret(c) for c in b.cmdlines.values())
    # ... the environment carries them: the template's key wins over the deployment's, as --api-key does in vLLM
    assert f"VLLM_API_KEY={KEY}".encode() in b.environ and f"HF_TOKEN={TOKEN}".encode() in b.environ
    assert b.keyless["/v1/completions"] == (401, b'{"error":"Unauthorized"}')
    assert b.keyless["/health"][0] == 200 and b.keyless["/metrics"][0] == 200
    # nothing returned or recorded carries a secret: the command, the launch, the outcome, the run's details
    assert out.command == launched["launch"].command == b.last_run.argv and _no_secret(out.command)
    assert out.command[-len(GOOD.cli_args()):] == GOOD.cli_args()
    assert _no_secret(msgspec.json.encode(out)) and _no_secret(msgspec.json.encode(b.last_run))
    assert _no_secret(b.command)


def test_a_deployment_env_key_alone_is_presented(backend_for, canary_ids, monkeypatch):
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    b = backend_for(env={"VLLM_API_KEY": ENV_KEY})
    out = b.run(GOOD, T0, canary_id=canary_ids())
    assert out.measurements.passed_load, out.measurements.excerpt
    assert _no_secret(msgspec.json.encode(out)) and _no_secret(msgspec.json.encode(b.last_run))


def test_a_config_yaml_key_is_presented_and_redacted_from_the_log(canary_ids, tmp_path, monkeypatch):
    # vLLM reads `--config` keys as flags: the key is not on argv, but an old vLLM prints it at startup
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    config = tmp_path / "canary.yaml"
    config.write_text(f"api-key: [{KEY}]\n")
    work = tmp_path / "work"
    b = VllmCanaryBackend([*FAKE_COMMAND, "--config", str(config)], MODEL, load=FAST_LOAD, health_timeout_s=30,
                          grace_s=3, workdir=work, env={"FAKE_VLLM_SCENARIO": "workstation-12gb-speech",
                                                        "VLLM_API_KEY": ENV_KEY})
    out = b.run(GOOD, T0, canary_id=canary_ids())
    assert out.measurements.passed_load, out.measurements.excerpt
    assert "'api_key': ['***']" in out.log_text                     # the line is there, the key is not
    assert _no_secret(msgspec.json.encode(out))
    assert _no_secret(Path(b.last_run.log_path).read_bytes())        # nor in the log kept in the workdir
