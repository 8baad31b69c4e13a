"""No blind runs (issue 15.6), as a person meets them: the installed `selfheal`, run as a
subprocess on a real SQLite log. Bounds that do not hold production's config are a config
error (exit 1, one line naming the deployment, the actuator and the values); a real deployment
whose GPU inventory cannot be read ends its run at the first candidate, and the next run is
not held back by it."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from selfheal.cli import exits
from selfheal.edges.nvml import NvmlInventory
from selfheal.edges.sim import load_scenario, simulate
from selfheal.handlers.ports import InventoryUnavailable

SELFHEAL = shutil.which("selfheal", path=str(Path(sys.executable).parent)) or "selfheal"
SCENARIO = "workstation-12gb-speech"
PRODUCTION_32K = "{gpu_memory_utilization = 0.9, max_model_len = 32768, max_num_seqs = 16, max_num_batched_tokens = 2048}"


def selfheal(folder: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SELFHEAL_")}
    return subprocess.run([SELFHEAL, "--db", str(folder / "log.db"), "--config", str(folder / "selfheal.toml"), *args],
                          env=env, capture_output=True, text=True, timeout=120)


def production_log(folder: Path) -> Path:
    log = folder / "vllm.log"
    log.write_text(simulate(load_scenario(SCENARIO)).log_text)
    return log


def test_the_default_bounds_on_a_32k_deployment_are_a_config_error(tmp_path):
    (tmp_path / "selfheal.toml").write_text(
        f'[deployments.qwen]\ncanary_backend = "vllm"\nmodel = "Qwen/Qwen2.5-7B-Instruct"\ninventory = "host"\n'
        f"current = {PRODUCTION_32K}\n")
    done = selfheal(tmp_path, "heal", str(production_log(tmp_path)))
    assert done.returncode == exits.ERROR, done.stdout
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr == (
        "selfheal: error: deployment 'qwen': its bounds do not hold the config it runs: max_model_len 32768 "
        "(from deployments.qwen.current) lies outside [1024, 8192] (from the default bounds, for a 12 GB card); "
        "set [deployments.qwen.actuators.max_model_len] (min, max, step) to bounds that hold it, or correct the "
        "current value\n")


def test_bounds_that_hold_production_load_and_the_values_vllm_defaults_are_named(tmp_path):
    (tmp_path / "selfheal.toml").write_text(
        f'[deployments.qwen]\ncanary_backend = "vllm"\nmodel = "m"\ninventory = "host"\n'
        "current = {gpu_memory_utilization = 0.9, max_model_len = 4096}\n")   # max_num_seqs: vLLM's 256
    done = selfheal(tmp_path, "observe", str(production_log(tmp_path)))
    assert done.returncode == exits.ERROR
    assert ("max_num_seqs 256 (from vLLM's default: deployments.qwen.current does not set it) lies outside [2, 16] "
            "(from the default bounds, for a 12 GB card)") in done.stderr
    (tmp_path / "selfheal.toml").write_text(
        f'[deployments.qwen]\ncanary_backend = "vllm"\nmodel = "m"\ninventory = "host"\n'
        "current = {gpu_memory_utilization = 0.9, max_model_len = 4096, max_num_seqs = 8}\n")
    done = selfheal(tmp_path, "observe", str(production_log(tmp_path)))
    assert done.returncode == exits.OK, done.stderr


def test_a_utilization_outside_a_sim_deployments_bounds_is_a_config_error(tmp_path):
    (tmp_path / "selfheal.toml").write_text(
        f'[deployments.ws]\nscenario = "{SCENARIO}"\n'
        "[deployments.ws.actuators.gpu_memory_utilization]\nmin = 0.5\nmax = 0.85\nstep = 0.05\n")
    done = selfheal(tmp_path, "heal", str(production_log(tmp_path)))
    assert done.returncode == exits.ERROR and done.stderr.count("\n") == 1
    assert done.stderr.startswith(
        f"selfheal: error: deployment 'ws': its bounds do not hold the config it runs: gpu_memory_utilization 0.9 "
        f"(from scenario {SCENARIO}'s [current]) lies outside [0.5, 0.85] "
        "(from deployments.ws.actuators.gpu_memory_utilization)")


def _nvml_reads() -> bool:
    try:
        NvmlInventory().snapshot()
    except InventoryUnavailable:
        return False
    return True


@pytest.mark.skipif(_nvml_reads(), reason="NVML reads this host's GPUs: the blind case needs a host without them")
def test_without_nvml_a_real_run_ends_at_its_first_candidate_and_holds_nothing_back(tmp_path):
    """The issue's run: a real deployment on a host whose NVML cannot be read proposed 7
    candidates, each rejected for the same missing library, and counted as failed."""
    (tmp_path / "selfheal.toml").write_text(
        f'[deployments.ws]\ncanary_backend = "vllm"\nmodel = "m"\ninventory = "nvml"\n'
        # a canary would fail loudly: none may start
        f'command = ["/bin/false", "{{model}}", "{{host}}", "{{port}}"]\n'
        "current = {gpu_memory_utilization = 0.9, max_model_len = 8192, max_num_seqs = 16, "
        "max_num_batched_tokens = 2048}\n")
    log = production_log(tmp_path)
    done = selfheal(tmp_path, "heal", str(log))
    assert done.returncode == exits.NOT_HEALED, done.stderr
    assert done.stdout.count("candidate #") == 1 and "CanaryStarted" not in done.stdout
    assert "ESCALATION: pre-flight cannot read the GPU inventory" in done.stdout
    assert "retry: once the inventory reads:" in done.stdout and "selfheal heal --force LOG" in done.stdout
    state = json.loads(selfheal(tmp_path, "state", "--json").stdout)
    (ws,) = [s for s in state if s["deployment"] == "ws"]
    assert ws["runs_in_window"] == 0 and ws["consecutive_failures"] == 0
    # the same failure again: folded into the escalated intent; forced: a run starts at once
    again = selfheal(tmp_path, "heal", str(log))
    assert "folded into intent" in again.stdout and "run " not in again.stdout.split("folded into intent")[1]
    forced = selfheal(tmp_path, "heal", "--force", str(log))
    assert "retry forced (heal --force)" in forced.stdout and "refused" not in forced.stdout
    assert forced.stdout.count("candidate #") == 1, forced.stdout
