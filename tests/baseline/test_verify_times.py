"""Issue 16: a commit's verification is dated when it ended, not at the canary's end.

A whole heal through real processes: the installed `selfheal heal` runs fake-vLLM canaries,
promotes, writes production's YAML and reloads production under `selfheal supervise` with a
real SIGHUP. Production takes STARTUP_S to come back (FAKE_VLLM_STARTUP_DELAY, given to the
supervised server only), so the verification takes that long for real. The timeline must
show it: the reload is requested at the canary's end, and the verification is dated later by
what the reloader measured, which the recorder's own clock (recorded_at) confirms."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

from selfheal.edges.processes import free_loopback_port, processes_marked_with
from selfheal.edges.sim import load_scenario, simulate
from tests.fakes.deployment import FAKE, fake_vllm_deployment

SELFHEAL = str(Path(sys.executable).with_name("selfheal"))
STARTUP_S = 3
YAML = "gpu-memory-utilization: 0.9\nmax-model-len: 8192\nmax-num-seqs: 16\nmax-num-batched-tokens: 2048\n"


def _env(**extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith(("SELFHEAL_", "FAKE_VLLM_"))}, **extra}


def _time(row: dict, field: str) -> datetime:
    return datetime.fromisoformat(row[field])


def test_the_verification_is_dated_after_the_canary_by_what_it_took(tmp_path):
    port = free_loopback_port()
    config_file, pidfile = tmp_path / "prod.yaml", tmp_path / "supervise.pid"
    config_file.write_text(YAML)
    serve = [sys.executable, str(FAKE), "serve", "{model}", "--config", "{config_file}",
             "--host", "127.0.0.1", "--port", str(port)]
    toml = tmp_path / "selfheal.toml"
    toml.write_text(fake_vllm_deployment(
        "fake", keys=(f"config_file = {json.dumps(str(config_file))}\n"
                      f'health_url = "http://127.0.0.1:{port}/health"\nserve_command = {json.dumps(serve)}\n'),
        tables=(f'[deployments.fake.reload]\nmethod = "signal"\npidfile = {json.dumps(str(pidfile))}\n'
                "[deployments.fake.verify]\ndeadline_s = 30\nprobe_requests = 2\n")))
    log = tmp_path / "vllm.log"
    log.write_text(simulate(load_scenario("workstation-12gb-speech")).log_text)
    cli = [SELFHEAL, "--db", str(tmp_path / "log.db"), "--config", str(toml)]

    supervisor = subprocess.Popen([*cli, "supervise", "--pidfile", str(pidfile)], cwd=tmp_path, text=True,
                                  env=_env(FAKE_VLLM_STARTUP_DELAY=str(STARTUP_S), FAKE_VLLM_LINE_DELAY="0"),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        for _ in range(100):   # the pidfile is the reload's target: wait for supervise to write it
            if pidfile.exists():
                break
            time.sleep(0.1)
        healed = subprocess.run([*cli, "heal", "--deployment", "fake", "--json", str(log)], cwd=tmp_path,
                                env=_env(), capture_output=True, text=True, timeout=240)
        assert healed.returncode == 0, healed.stdout[-3000:] + healed.stderr
        rows = [json.loads(line) for line in healed.stdout.splitlines()]
        # the loop ran to its end: replay and a second run must read the recorded times, not reload again
        replayed = subprocess.run([*cli, "replay", "--json"], cwd=tmp_path, env=_env(), capture_output=True,
                                  text=True, timeout=120)
        again = subprocess.run([*cli, "run", "--json"], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                               timeout=120)
    finally:
        supervisor.send_signal(signal.SIGTERM)
        supervised, _ = supervisor.communicate(timeout=60)
    assert processes_marked_with("supervised-") == [], "supervise left a server behind"

    (promotion,) = [r for r in rows if r["type"] == "PromotionProposed"]
    (canary,) = [r for r in rows if r["type"] == "CanaryCompleted"
                 and r["data"]["candidate_id"] == promotion["data"]["candidate_id"]]
    (requested,) = [r for r in rows if r["type"] == "ReloadRequested"]
    (verified,) = [r for r in rows if r["type"] == "VerificationFinished"]
    assert verified["data"]["healthy"], verified["data"]["detail"]
    assert supervised.count("SIGHUP: restarting") == 1, supervised

    canary_end = _time(canary, "occurred_at")
    assert _time(requested, "occurred_at") == canary_end      # the write and the request take no time to speak of
    took = _time(verified, "occurred_at") - canary_end
    # the recorder's clock: from the request's append (before the SIGHUP) to the verification's (after the probe)
    between_appends = _time(verified, "recorded_at") - _time(requested, "recorded_at")
    assert timedelta(seconds=STARTUP_S) <= took <= between_appends, (took, between_appends)
    assert between_appends - took < timedelta(seconds=2), (took, between_appends)   # only the runner's own overhead
    assert _time(verified, "occurred_at") <= _time(verified, "recorded_at")

    assert replayed.returncode == 0, replayed.stderr
    assert again.returncode == 0 and json.loads(again.stdout)["emitted"] == 0, again.stdout + again.stderr
