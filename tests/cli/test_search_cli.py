"""`selfheal heal` when vLLM's estimate lies below the operator's floor (issue 15.1): the
installed command, as a subprocess, on a real SQLite log. With room to raise utilization the
failure is healed inside the bounds; without it, the escalation says what was predicted."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from selfheal.edges.sim import load_scenario, simulate

SELFHEAL = shutil.which("selfheal", path=str(Path(sys.executable).parent)) or "selfheal"


def heal(tmp_path: Path, util_max: float) -> subprocess.CompletedProcess:
    (tmp_path / "selfheal.toml").write_text(
        '[deployments.llama]\nscenario = "a-llama8b-24gb"\n[deployments.llama.actuators]\n'
        f"gpu_memory_utilization = {{ min = 0.60, max = {util_max}, step = 0.01 }}\n"
        "max_num_seqs = { min = 8, max = 256, step = 8 }\n"
        "max_model_len = { min = 49152, max = 131072, step = 1024 }\n"  # vLLM estimates 43408
        "max_num_batched_tokens = { min = 512, max = 16384, step = 512 }\n")
    log = tmp_path / "vllm.log"
    log.write_text(simulate(load_scenario("a-llama8b-24gb")).log_text)
    return subprocess.run([SELFHEAL, "--db", str(tmp_path / "log.db"), "--config", str(tmp_path / "selfheal.toml"),
                           "heal", "--deployment", "llama", str(log)], capture_output=True, text=True, timeout=120)


def test_the_escalation_names_the_alternatives_predicted_and_their_failure(tmp_path):
    done = heal(tmp_path, 0.9)
    assert done.returncode == 3, done.stderr  # escalated
    (line,) = [l for l in done.stdout.splitlines() if "EscalationRaised" in l]
    assert ("ESCALATION: seed fix outside the bounds: needs max_model_len=43008, below the minimum 49152; "
            "nothing inside the bounds is predicted to work: max_model_len=49152 predicted "
            "max_model_len_exceeds_kv_cache; nor any of ") in line
    assert "CandidateProposed" not in done.stdout


def test_with_room_inside_the_bounds_the_same_failure_heals(tmp_path):
    done = heal(tmp_path, 0.95)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "is predicted to work: the tournament searches inside the bounds" in done.stdout
    assert "outcome: promoted" in done.stdout
