"""A stop does not wait for a whole healing run: `run --follow` given SIGTERM while a canary's
server never comes up ends within $SELFHEAL_STOP_GRACE_SECONDS (exit 130), leaves no canary
process behind, and the log verifies; a second signal ends it at once."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.operator.conftest import SAMPLES, selfheal, until

MARK = "selfheal-stop-grace-canary"


def _hanging_deployment(tmp_path):
    db, config = tmp_path / "s.db", tmp_path / "selfheal.toml"
    # a canary server that never answers its health check: the run would wait 600 s for it
    hang = [sys.executable, "-c", f"import time; time.sleep(900)  # {MARK}", "{model}", "{port}"]
    config.write_text(f'[tournament]\nmax_candidates = 1\n[deployments.qwen]\ncanary_backend = "vllm"\n'
                      f'model = "Qwen/Qwen2.5-0.5B-Instruct"\ninventory = "host"\nhealth_timeout_s = 600\n'
                      f'command = {json.dumps(hang)}\ncurrent = {{gpu_memory_utilization = 0.9, max_model_len = 8192, '
                      f'max_num_seqs = 16, max_num_batched_tokens = 2048}}\n')
    assert selfheal("--db", str(db), "init").returncode == 0
    return db, config


def _canaries() -> list[int]:
    """pids of this test's canary servers still alive."""
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if MARK.encode() in f.read():
                        out.append(int(pid))
            except OSError:
                pass
    return out


@pytest.mark.parametrize("second_signal", [False, True], ids=["grace", "second-signal"])
def test_a_stop_during_a_canary_ends_within_the_grace_and_leaves_no_canary(tmp_path, service, second_signal):
    db, config = _hanging_deployment(tmp_path)
    s = service("--db", str(db), "--config", str(config), "run", "--follow", "--interval", "0.2",
                env={"SELFHEAL_STOP_GRACE_SECONDS": "60" if second_signal else "2"})
    out = selfheal("--db", str(db), "--config", str(config), "observe", "--deployment", "qwen",
                   str(SAMPLES / "failing_sampler_oom_v1.log"))
    assert out.returncode == 0, out.stderr
    until(_canaries, "the canary's server running", deadline_s=60)
    started = time.monotonic()
    s.proc.send_signal(signal.SIGTERM)
    if second_signal:
        time.sleep(0.5)
        s.proc.send_signal(signal.SIGTERM)
    try:
        code = s.proc.wait(timeout=30)  # no signal more than the test sent
    except subprocess.TimeoutExpired:
        code = None
    took = time.monotonic() - started
    _, err = s.stop()
    assert code == 130, err
    assert took < (10 if second_signal else 15), took  # the run would have waited 600 s for its canary
    assert "Traceback" not in err, err
    assert until(lambda: not _canaries(), "no canary process left", deadline_s=20)
    verify = selfheal("--db", str(db), "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_grace_that_is_no_number_is_one_clear_error(tmp_path):
    out = selfheal("--db", str(tmp_path / "s.db"), "run", "--follow", env={"SELFHEAL_STOP_GRACE_SECONDS": "soon"})
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert "$SELFHEAL_STOP_GRACE_SECONDS: 'soon' is not a number of seconds (0 or more)" in out.stderr
