from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

import selfheal
from selfheal.cli.main import cli
from selfheal.edges.sim import load_scenario, simulate
from selfheal.eventstore import open_store
from tests.conftest import archived

STARTUP_0_14 = ("(EngineCore_DP0 pid=4242) ERROR 11-24 06:55:12 [core.py:708] ValueError: Free memory on device cuda:0 "
                "(8.41/11.66 GiB) on startup is less than desired GPU memory utilization (0.9, 10.49 GiB). Decrease "
                "GPU memory utilization or reduce GPU memory used by other processes.\n")


def run(*args, input=None, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input, env=env, catch_exceptions=False)


def test_diagnose_json_shape():
    result = run("diagnose", "-", "--json", "--current", "gpu_memory_utilization=0.9", input=STARTUP_0_14)
    body = json.loads(result.output)
    assert set(body) == {"primary", "findings"}
    primary = body["primary"]
    assert {"kind", "rule", "numbers", "fix_direction", "fix", "action", "evidence"} <= set(primary)
    assert primary["kind"] == "startup_free_memory_below_utilization"
    assert primary["numbers"]["free_gib"] == 8.41 and primary["numbers"]["total_gib"] == 11.66
    assert primary["fix_direction"] == {"gpu_memory_utilization": "decrease"}
    assert primary["fix"] == {"gpu_memory_utilization": 0.6}
    assert primary["action"] == "tune"


def test_diagnose_healthy_text_has_no_primary(tmp_path):
    log = tmp_path / "ok.log"
    log.write_text("INFO 11-24 06:55:12 [gpu_worker.py:231] Available KV cache memory: 5.3 GiB\n")
    body = json.loads(run("diagnose", log, "--json").output)
    assert body == {"primary": None, "findings": []}


def test_diagnose_reads_a_vllm_yaml(tmp_path):
    cfg = tmp_path / "vllm.yaml"
    cfg.write_text("model: x\ngpu-memory-utilization: 0.9\nmax-model-len: 8192\n")
    body = json.loads(run("diagnose", "-", "--json", "--vllm-config", cfg, input=STARTUP_0_14).output)
    assert body["primary"]["fix"] == {"gpu_memory_utilization": 0.6}
    bad = tmp_path / "bad.yaml"
    bad.write_text("max-model-len: [1, 2\n")
    proc = subprocess.run([sys.executable, "-m", "selfheal", "diagnose", "-", "--vllm-config", str(bad)],
                          input=STARTUP_0_14, capture_output=True, text=True)
    assert proc.returncode == 1 and "bad.yaml: not valid YAML at line" in proc.stderr


def test_diagnose_reads_a_file_a_pipe_or_standard_input_alike(tmp_path):
    # a regular file is read in pieces, a pipe and standard input whole: one answer
    log = tmp_path / "vllm.log"
    log.write_text(("(APIServer pid=9) INFO:     127.0.0.1:4000 - \"GET /health HTTP/1.1\" 200 OK\n" * 30_000)
                   + STARTUP_0_14)
    from_file = subprocess.run([sys.executable, "-m", "selfheal", "diagnose", str(log), "--json"],
                               capture_output=True, text=True)
    piped = subprocess.run(f"{sys.executable} -m cli.main diagnose --json <(cat {log})", shell=True,
                           executable="/bin/bash", capture_output=True, text=True)
    from_stdin = run("diagnose", "-", "--json", input=log.read_bytes())
    # exit 4: a configuration failure was found (cli/exits.py)
    assert from_file.returncode == 4 and piped.returncode == 4, (from_file.stderr, piped.stderr)
    assert json.loads(from_file.stdout) == json.loads(piped.stdout) == json.loads(from_stdin.output)
    assert json.loads(from_file.stdout)["primary"]["line"] == 30_001


@pytest.mark.parametrize("target", ["missing.log", "."])
def test_diagnose_names_a_file_it_cannot_read(tmp_path, target):
    proc = subprocess.run([sys.executable, "-m", "selfheal", "diagnose", target], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith(f"selfheal: error: {target}: cannot read: ") and proc.stderr.count("\n") == 1


def test_demo_ends_in_a_promotion(tmp_path):
    db = tmp_path / "demo.db"
    result = run("demo", "--out", db)
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0] == f"scenario workstation-12gb-speech; log at {db}"
    assert any("PromotionProposed" in line for line in lines)
    assert lines[-1].startswith("outcome: promoted.")


def test_demo_escalation_scenario_names_why(tmp_path):
    result = run("demo", "--scenario", "no-safe-fix", "--out", tmp_path / "d.db")
    assert "ESCALATION: the weights do not fit" in result.output
    assert result.output.strip().splitlines()[-1].startswith("outcome: alerted")


def test_demo_names_a_refinement_after_a_passing_seed(tmp_path):
    result = run("demo", "--scenario", "a-llama8b-24gb", "--out", tmp_path / "a.db")
    lines = result.output.strip().splitlines()
    assert any("candidate #0 (seed): max_model_len 131072->43008" in line for line in lines)
    refine = "candidate #1 (refine, after a passing seed): gpu_memory_utilization 0.9->0.95"
    assert any(refine in line for line in lines)
    assert any("finished: promoted after 2 canaries" in line for line in lines)
    assert lines[-1].startswith("outcome: promoted.")


def test_demo_refuses_an_existing_log(tmp_path):
    db = tmp_path / "d.db"
    run("demo", "--out", db)
    proc = subprocess.run([sys.executable, "-m", "selfheal", "demo", "--out", str(db)], capture_output=True, text=True)
    assert proc.returncode == 1 and "writes a fresh log" in proc.stderr


def configured(tmp_path):
    """A configured deployment's selfheal.toml, a log file of its failure, and where its log goes."""
    config = tmp_path / "selfheal.toml"
    config.write_text('[deployments.chat]\nscenario = "workstation-12gb-speech"\n')
    log = tmp_path / "vllm.log"
    log.write_text(simulate(load_scenario("workstation-12gb-speech")).log_text)
    return config, log, tmp_path / "log.db"


@pytest.fixture
def healed(tmp_path):
    """A configured deployment, a log file of its failure, and `selfheal heal` run over it."""
    config, log, db = configured(tmp_path)
    result = run("--db", db, "--config", config, "heal", log)
    assert result.exit_code == 0, result.output
    return db, config, result.output


def test_heal_prints_the_outcome(healed):
    _, _, output = healed
    assert "PromotionProposed" in output and "IntentArchived" in output


def test_queries_after_a_heal(healed):
    db, config, _ = healed
    history = json.loads(run("--db", db, "--config", config, "history", "--json").output)
    assert [r["status"] for r in history] == ["promoted"]
    state = json.loads(run("--db", db, "--config", config, "state", "--json").output)
    assert state[0]["deployment"] == "chat" and len(state[0]["run_starts"]) == 1
    assert json.loads(run("--db", db, "promotions", "--json").output) == []  # nothing waits
    promotions = json.loads(run("--db", db, "promotions", "--all", "--json").output)
    assert len(promotions) == 1 and promotions[0]["simulated"] is True
    assert promotions[0]["status"] == "not committed"
    assert promotions[0]["note"] == "simulated results are never committed to a production baseline"
    intents = json.loads(run("--db", db, "intents", "--json").output)
    assert intents[0]["outcome"] == "promoted"
    chain = json.loads(run("--db", db, "show", history[0]["run_id"][:8], "--json").output)
    types = [e["type"] for e in chain["chain"]]
    assert types[0] == "IncidentCaptured" and "PromotionProposed" in types
    assert types[-1] == "PromotionNotCommitted"  # simulated: the chain ends before any config write
    # as of the incident alone, nothing had happened yet
    first = json.loads(run("--db", db, "events", "--json", "--limit", "2").output.splitlines()[1])
    assert json.loads(run("--db", db, "history", "--json", "--as-of", first["position"]).output) == []


def test_observe_without_deployments_says_what_to_do(tmp_path):
    empty = tmp_path / "selfheal.toml"
    empty.write_text("")
    proc = subprocess.run([sys.executable, "-m", "selfheal", "--db", str(tmp_path / "x.db"), "--config", str(empty),
                           "observe", "-"], input="x", capture_output=True, text=True)
    assert proc.returncode == 1 and "no deployments are configured" in proc.stderr


def test_show_unknown_run(healed):
    db, _, _ = healed
    proc = subprocess.run([sys.executable, "-m", "selfheal", "--db", str(db), "show", "nope"], capture_output=True, text=True)
    # exit 2: an id that names nothing is a usage error (cli/exits.py)
    assert proc.returncode == 2 and proc.stderr.strip() == "selfheal: error: run 'nope': no such run"


def test_run_writes_the_projection_snapshot_the_readme_promises(tmp_path):
    db = tmp_path / "log.db"
    with open_store(db, create=True) as store:
        store.append_many([(f"intent-{i}", [archived(i)]) for i in range(1001)])
    empty = tmp_path / "selfheal.toml"
    empty.write_text("")
    result = run("--db", db, "--config", empty, "run")
    assert result.exit_code == 0 and result.output == "handled 0 events, recorded 0, log at 1001\n"
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT position FROM view_snapshots").fetchall() == [(1001,)]
    conn.close()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_run_follow_handles_what_is_recorded_while_it_runs(tmp_path, sig):
    config, log, db = configured(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "selfheal", "--db", str(db), "--config", str(config), "run",
                             "--follow", "--interval", "0.2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 30
        while not db.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # a few polls of an empty log
        selfheal.observe([log], db=db, config=config)  # recorded by another process while it polls
        while time.monotonic() < deadline and [r.status for r in selfheal.history(db=db)] != ["promoted"]:
            time.sleep(0.2)
        assert [r.status for r in selfheal.history(db=db)] == ["promoted"]
    finally:
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=20)
    # SIGINT and SIGTERM alike: exit 130, one line (cli/exits.py)
    assert proc.returncode == 130 and err == "selfheal: interrupted\n", err
    # each event's line as it is recorded, with its time as --as-of takes it
    lines = out.splitlines()
    assert lines and all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z  ", line) for line in lines), out
    assert any("RunFinished" in line and "promoted" in line for line in lines), out
