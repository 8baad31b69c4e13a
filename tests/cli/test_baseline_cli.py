from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner

from selfheal.cli.main import cli
from selfheal.edges.sim import load_scenario, simulate


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_prod_escrow_and_baseline_through_the_cli(tmp_path):
    yaml_file = tmp_path / "vllm.yaml"
    yaml_file.write_text("model: x\ngpu-memory-utilization: 0.9\nmax-model-len: 8192\nmax-num-seqs: 16\n")
    config = tmp_path / "selfheal.toml"
    config.write_text(f'mode = "prod"\n[deployments.chat]\nscenario = "workstation-12gb-speech"\n'
                      f'config_file = "{yaml_file}"\n')
    db = tmp_path / "log.db"
    imported = json.loads(run("--db", db, "--config", config, "baseline", "import", "chat", "--json").output)
    assert imported["version"] == 1 and imported["config"]["max_num_seqs"] == 16
    again = subprocess.run([sys.executable, "-m", "selfheal", "--db", str(db), "--config", str(config),
                            "baseline", "import", "chat"], capture_output=True, text=True)
    assert again.returncode == 1 and "already has a baseline" in again.stderr
    log = tmp_path / "vllm.log"
    log.write_text(simulate(load_scenario("workstation-12gb-speech")).log_text)
    run("--db", db, "--config", config, "heal", log)
    (waiting,) = json.loads(run("--db", db, "--config", config, "promotions", "--json").output)
    assert waiting["status"] == "waiting" and waiting["requires_approval"]
    approved = run("--db", db, "--config", config, "approve", waiting["promotion_id"][:8], "--by", "ana")
    assert approved.exit_code == 0 and approved.output.startswith(f"approved {waiting['promotion_id']} by ana")
    run("--db", db, "--config", config, "run")
    (done,) = json.loads(run("--db", db, "promotions", "--all", "--json").output)
    assert done["status"] == "not committed"  # a simulated result, approved or not, never reaches the file
    # the approval typed at a terminal is in the incident's chain, caused by the proposal
    (proposed,) = [json.loads(line) for line in run("--db", db, "events", "--type", "PromotionProposed",
                                                    "--json").output.splitlines()]
    chain = [json.loads(line) for line in run("--db", db, "events", "--correlation", proposed["correlation_id"],
                                              "--json").output.splitlines()]
    (approval,) = [e for e in chain if e["type"] == "PromotionApproved"]
    assert approval["causation_id"] == proposed["event_id"] and chain[0]["type"] == "IncidentCaptured"
    baseline = json.loads(run("--db", db, "baseline", "chat", "--json").output)
    assert [v["version"] for v in baseline["chat"]] == [1]
    assert "gpu-memory-utilization: 0.9" in yaml_file.read_text()
    twice = subprocess.run([sys.executable, "-m", "selfheal", "--db", str(db), "--config", str(config), "approve",
                            waiting["promotion_id"], "--by", "bo"], capture_output=True, text=True)
    assert twice.returncode == 1 and "no longer waits for a decision (status: not committed)" in twice.stderr
    assert json.loads(run("--db", db, "alerts", "--json").output) == []
