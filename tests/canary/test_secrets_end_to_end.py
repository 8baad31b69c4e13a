"""Issue 19, end to end: an API key and an HF token in the canary's command template, in the
deployment's environment and in the old-format vLLM startup log that selfheal heals from.
After a heal through real canary processes (the faithful fake vLLM, which refuses /v1 without
the key and prints its arguments as vLLM did before August 2026), an export, a forget and
every CLI command's output, neither secret is found anywhere: the database file, its WAL,
the bundle, the canaries' /proc/<pid>/cmdline, or what the CLI printed.
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

from selfheal.edges.processes import processes_marked_with
from selfheal.edges.sim import load_scenario, simulate
from tests.fakes.deployment import fake_vllm_deployment

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "sk-e2e-" + secrets.token_hex(16)
HF_TOKEN = "hf_" + "".join(secrets.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJ") for _ in range(34))
SECRETS = (API_KEY, HF_TOKEN)


def old_vllm_log() -> str:
    """The workstation scenario's failing startup as a pre-redaction vLLM printed it: both
    secrets in the argument dict (0.10+) and in the argparse Namespace (before 0.10)."""
    text = simulate(load_scenario("workstation-12gb-speech")).log_text
    args = (f"(APIServer pid=4100) INFO 11-24 06:55:00 [utils.py:233] non-default args: {{'model_tag': "
            f"'fake-model', 'host': '127.0.0.1', 'port': 8000, 'api_key': ['{API_KEY}'], 'model': 'fake-model', "
            f"'max_model_len': 8192, 'hf_token': '{HF_TOKEN}', 'gpu_memory_utilization': 0.9}}\n")
    namespace = (f"INFO 11-24 06:54:59 api_server.py:712] args: Namespace(host='127.0.0.1', port=8000, "
                 f"api_key='{API_KEY}', model='fake-model', hf_token='{HF_TOKEN}', max_model_len=8192, "
                 f"gpu_memory_utilization=0.9)\n")
    return namespace + args + text


def selfheal(tmp_path: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "selfheal", "--db", str(tmp_path / "log.db"),
                           "--config", str(tmp_path / "selfheal.toml"), *args],
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT), **(env or {})),
                          capture_output=True, text=True, timeout=240)


class CmdlineWatch(threading.Thread):
    """Reads /proc/<pid>/cmdline of every marked (canary) process while the heal runs."""

    def __init__(self):
        super().__init__(daemon=True)
        self.seen: dict[int, bytes] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for pid in processes_marked_with():
                try:
                    self.seen[pid] = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    pass
            time.sleep(0.02)


def test_no_secret_anywhere_after_a_heal_an_export_and_every_command(tmp_path):
    toml = fake_vllm_deployment("fake", env={"VLLM_API_KEY": API_KEY, "HF_TOKEN": HF_TOKEN,
                                             "FAKE_VLLM_STARTUP_DELAY": "1"})
    toml = toml.replace('"{port}"]', f'"{{port}}", "--api-key", "{API_KEY}", "--hf-token", "{HF_TOKEN}"]', 1)
    assert API_KEY in toml and HF_TOKEN in toml
    (tmp_path / "selfheal.toml").write_text(toml)
    log = tmp_path / "vllm.log"
    log.write_text(old_vllm_log())

    watch = CmdlineWatch()
    watch.start()
    try:
        healed = selfheal(tmp_path, "heal", "--deployment", "fake", "--json", str(log))
    finally:
        watch.stop.set()
        watch.join()
    assert healed.returncode == 0, healed.stderr
    chain = [json.loads(line) for line in healed.stdout.splitlines() if line.strip()]
    types = [e["type"] for e in chain]
    assert "CanaryCompleted" in types, types  # a canary ran, with the key (the fake refuses /v1 without it)
    assert watch.seen, "no canary process was seen"
    incident_id = next(e["data"]["incident_id"] for e in chain if e["type"] == "IncidentCaptured")
    run_id = next(e["data"]["run_id"] for e in chain if e["type"] == "RunStarted")
    loads = [e["data"]["measurements"]["passed_load"] for e in chain if e["type"] == "CanaryCompleted"]
    assert any(loads), loads  # a load phase passed: it authenticated (the fake answers 401 without the key)

    outputs = [healed.stdout, healed.stderr]
    for args in (["events"], ["events", "--json"], ["history", "--json"], ["intents"], ["promotions", "--all"],
                 ["show", run_id], ["state"], ["alerts"], ["verify"], ["replay"], ["diagnose", str(log)],
                 ["export", incident_id, "-o", str(tmp_path / "bundle.jsonl")], ["export", incident_id]):
        done = selfheal(tmp_path, *args)
        assert done.returncode in (0, 1, 4), (args, done.stderr)
        outputs += [done.stdout, done.stderr]
    bundle = (tmp_path / "bundle.jsonl").read_text()
    assert "fake-model" in bundle and "IncidentCaptured" in bundle  # a real bundle, its text open
    # the redacted startup lines are still there, their numbers intact
    assert "'max_model_len': 8192" in "".join(outputs)
    assert "[redacted:" in bundle

    files = {"log.db": (tmp_path / "log.db").read_bytes()}
    wal = tmp_path / "log.db-wal"
    files["log.db-wal"] = wal.read_bytes() if wal.exists() else b""
    for secret in SECRETS:
        for name, data in files.items():
            assert secret.encode() not in data, f"{name} holds a secret"
        assert secret not in bundle, "the bundle holds a secret"
        for pid, cmdline in watch.seen.items():
            assert secret.encode() not in cmdline, f"canary {pid}'s command line holds a secret"
        for i, out in enumerate(outputs):
            assert secret not in out, f"CLI output {i} holds a secret: {out[:300]}"

    # the canary's key did reach it (through its environment): the fake printed it in its args
    # line as an old vLLM does, and that line was redacted on its way into the log
    assert "'api_key': ['[redacted:" in "".join(outputs)


def test_forget_makes_an_incident_unreadable_replay_says_so_and_verify_passes(tmp_path):
    (tmp_path / "selfheal.toml").write_text(fake_vllm_deployment("fake"))
    log = tmp_path / "vllm.log"
    # a secret no pattern lists: only forgetting can take it back
    log.write_text(simulate(load_scenario("workstation-12gb-speech")).log_text + "customer: zebra-umbrella-4471\n")
    observed = selfheal(tmp_path, "observe", "--deployment", "fake", "--json", str(log))
    assert observed.returncode == 0, observed.stderr
    incident_id = json.loads(observed.stdout)["incidents"][0]
    assert "zebra-umbrella-4471" in selfheal(tmp_path, "events", "--type", "IncidentCaptured", "--json").stdout

    forgotten = selfheal(tmp_path, "forget", incident_id, "--by", "ops", "--reason", "a customer name", "--json")
    assert forgotten.returncode == 0, forgotten.stderr
    assert json.loads(forgotten.stdout)["incident_id"] == incident_id
    shown = selfheal(tmp_path, "events", "--type", "IncidentCaptured", "--json").stdout
    assert "zebra-umbrella-4471" not in shown and "forgotten" in shown
    assert b"zebra-umbrella-4471" not in (tmp_path / "log.db").read_bytes()
    replayed = selfheal(tmp_path, "replay", "--json")
    assert replayed.returncode == 0, replayed.stderr
    assert json.loads(replayed.stdout)["forgotten"] == [incident_id]
    verified = selfheal(tmp_path, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    again = selfheal(tmp_path, "forget", incident_id, "--by", "someone-else", "--json")
    assert json.loads(again.stdout)["by"] == "ops"  # forgetting twice records nothing new


def test_old_format_startup_logs_lose_their_secrets_and_diagnose_the_same(tmp_path):
    """Both old shapes (the argument dict, the Namespace), a failing startup and a healthy
    one: observed through the CLI, nothing of either secret is recorded, and the observation
    the log holds is the one the raw text gives."""
    from selfheal.handlers.observer import diagnose

    (tmp_path / "selfheal.toml").write_text(fake_vllm_deployment("fake"))
    samples = sorted((ROOT / "tests" / "samples").glob("secrets_vllm_*.log"))
    texts = {"failing": old_vllm_log(), **{p.name: p.read_text() for p in samples}}
    for name, raw in texts.items():
        log = tmp_path / name
        log.write_text(raw)
        assert selfheal(tmp_path, "observe", "--deployment", "fake", str(log)).returncode == 0
    rows = [json.loads(line) for line in selfheal(tmp_path, "events", "--json").stdout.splitlines()]
    recorded = [r["data"]["raw_text"] for r in rows if r["type"] == "IncidentCaptured"]
    assert len(recorded) == len(texts)
    for raw, kept in zip(texts.values(), recorded):
        assert "[redacted:" in kept
        for secret in SECRETS:
            assert secret not in kept
        before, after = diagnose(raw), diagnose(kept)
        assert [(f.kind, f.rule, f.evidence) for f in before.findings] == \
               [(f.kind, f.rule, f.evidence) for f in after.findings], raw[:200]
    assert diagnose(texts["failing"]).primary is not None  # the comparison covered a real failure
    db = (tmp_path / "log.db").read_bytes()
    assert not any(secret.encode() in db for secret in SECRETS)
