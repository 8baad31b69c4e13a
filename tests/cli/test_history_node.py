"""A fleet's runs told apart by node: `--node`, $SELFHEAL_NODE, else the hostname, recorded
by the runner that started each run; `history --node`, `state --node` and `show` read it back.
The installed `selfheal`, run as a subprocess, on a real SQLite log."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from selfheal.edges.sim import load_scenario, simulate

SELFHEAL = shutil.which("selfheal", path=str(Path(sys.executable).parent)) or "selfheal"


def selfheal(folder: Path, *args: str, node_env: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SELFHEAL_NODE"}
    if node_env is not None:
        env["SELFHEAL_NODE"] = node_env
    return subprocess.run([SELFHEAL, "--db", str(folder / "log.db"), "--config", str(folder / "selfheal.toml"), *args],
                          env=env, capture_output=True, text=True, timeout=120)


def fleet(tmp_path: Path) -> Path:
    """Three deployments on one log, each healed by a different node, each node named its own way."""
    (tmp_path / "selfheal.toml").write_text("".join(
        f'[deployments.{d}]\nscenario = "workstation-12gb-speech"\n' for d in ("chat", "code", "misc")))
    log = tmp_path / "vllm.log"
    log.write_text(simulate(load_scenario("workstation-12gb-speech")).log_text)
    for done in (selfheal(tmp_path, "heal", "--deployment", "chat", str(log), node_env="alpha"),  # $SELFHEAL_NODE
                 selfheal(tmp_path, "--node", "beta", "heal", "--deployment", "code", str(log), node_env="alpha"),
                 selfheal(tmp_path, "heal", "--deployment", "misc", str(log))):  # neither: the hostname
        assert done.returncode == 0, done.stderr
    return tmp_path


def history(folder: Path, *args: str) -> list[dict]:
    done = selfheal(folder, "history", "--json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_history_state_and_show_answer_per_node(tmp_path):
    folder = fleet(tmp_path)
    every = history(folder)
    assert {r["deployment"]: r["node"] for r in every} == {"chat": "alpha", "code": "beta",
                                                           "misc": socket.gethostname()}
    assert [r["deployment"] for r in history(folder, "--node", "alpha")] == ["chat"]
    assert [r["deployment"] for r in history(folder, "--node", "beta")] == ["code"]  # --node beats $SELFHEAL_NODE
    assert history(folder, "--node", "gamma") == []
    state = selfheal(folder, "state", "--json", "--node", "beta")
    assert state.returncode == 0, state.stderr
    assert [s["deployment"] for s in json.loads(state.stdout)] == ["code"]
    assert len(json.loads(selfheal(folder, "state", "--json").stdout)) == 3  # the fleet's, whole
    shown = selfheal(folder, "show", every[0]["run_id"][:8])
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[0].startswith(f"run {every[0]['run_id']} (chat) on node alpha: promoted")


def test_a_node_name_that_is_not_one_word_is_refused_in_one_line(tmp_path):
    (tmp_path / "selfheal.toml").write_text('[deployments.chat]\nscenario = "workstation-12gb-speech"\n')
    done = selfheal(tmp_path, "--node", "gpu node", "run")
    assert done.returncode == 1
    assert done.stderr == "selfheal: error: node 'gpu node': a node name is one word of printable characters, " \
                          "e.g. gpu-node-1\n"
    done = selfheal(tmp_path, "run", node_env="")
    assert done.returncode == 1 and done.stderr.startswith("selfheal: error: $SELFHEAL_NODE '': ")
