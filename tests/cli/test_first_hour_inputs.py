"""Issue 16, continued: demo's log and scenario, the words, state from the start, bad observe
inputs, and heal's live timeline; the installed `selfheal` run as a subprocess."""
from __future__ import annotations

import json
import re

import pytest

from selfheal.edges.sim import load_scenario, simulate
from tests.cli.test_first_hour import CHAT, EXCERPT, ISO_Z, sh

SCENARIOS = __import__("selfheal.edges.sim.scenario", fromlist=["SCENARIO_DIR"]).SCENARIO_DIR


# -- 6. demo honours --db and $SELFHEAL_DB, scenario files by any path -----------------------------

@pytest.mark.parametrize("how", ["--db", "env"])
def test_demo_writes_the_chosen_log(tmp_path, how):
    target = tmp_path / "chosen.db"
    args, env = (["--db", target], None) if how == "--db" else ([], {"SELFHEAL_DB": str(target)})
    proc = sh(tmp_path, *args, "demo", env={**(env or {}), "TMPDIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"scenario workstation-12gb-speech; log at {target}\n")
    assert sh(tmp_path, "--db", target, "history").stdout.count("promoted") >= 1
    assert not list(tmp_path.glob("selfheal-demo-*"))  # no temp folder either
    again = sh(tmp_path, *args, "demo", env=env)
    assert again.returncode == 1 and "already holds events" in again.stderr


def test_demo_takes_a_scenario_file_by_any_path(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "my.toml").write_bytes((SCENARIOS / "workstation-12gb-speech.toml").read_bytes())
    proc = sh(tmp_path, "demo", "--scenario", "./sub/my.toml", env={"TMPDIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("scenario my; log at ") and "selfheal-demo-my-" in proc.stdout


def test_a_failed_demo_leaves_no_temp_folder(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("not = [a scenario\n")
    for args in (["--scenario", "nosuch"], ["--scenario", str(bad)]):
        proc = sh(tmp_path, "demo", *args, env={"TMPDIR": str(tmp_path)})
        assert proc.returncode in (1, 2) and "Traceback" not in proc.stderr, proc.stderr
    assert not list(tmp_path.glob("selfheal-demo-*"))


# -- 7. the words --------------------------------------------------------------------------------

def test_the_timeline_reads_right(tmp_path):
    out = sh(tmp_path, "--db", tmp_path / "d.db", "demo").stdout
    assert "canary log" in out and "no failure found" in out
    assert "no rule explains incident" not in out  # a passing canary's log is no fault
    assert "after 2 canaries" in out
    one = sh(tmp_path, "--db", tmp_path / "a.db", "demo", "--scenario", "a-llama8b-24gb").stdout
    assert "1 canaries" not in one and "; )" not in one


def test_diagnose_has_its_own_yaml_option_and_says_when_a_fix_is_out_of_bounds(tmp_path):
    yaml = tmp_path / "vllm.yaml"
    yaml.write_text("gpu-memory-utilization: 0.9\n")
    new = sh(tmp_path, "diagnose", "-", "--vllm-config", yaml, input=EXCERPT)
    old = sh(tmp_path, "diagnose", "-", "--config", yaml, input=EXCERPT)
    assert new.returncode == old.returncode == 4 and new.stdout == old.stdout and new.stderr == ""
    assert "deprecated" in old.stderr and "--vllm-config" in old.stderr
    assert not re.search(r"^\s+--config\b", sh(tmp_path, "diagnose", "--help").stdout, re.M)  # hidden
    low = EXCERPT.replace("(8.41/11.66 GiB)", "(4.00/11.66 GiB)")
    noted = sh(tmp_path, "diagnose", "-", "--current", "gpu_memory_utilization=0.9", input=low).stdout
    assert "outside the actuator bounds" in noted, noted


def test_current_that_is_not_a_number_names_the_option(tmp_path):
    proc = sh(tmp_path, "diagnose", "-", "--current", "max_num_seqs=many", input=EXCERPT)
    assert proc.returncode == 2 and "--current" in proc.stderr and "could not convert" not in proc.stderr


# -- 8. state ------------------------------------------------------------------------------------

def test_state_lists_configured_deployments_from_the_start_and_at_counts_only_the_past(tmp_path):
    (tmp_path / "selfheal.toml").write_text(CHAT + '\n[deployments.idle]\nscenario = "no-safe-fix"\n')
    (tmp_path / "vllm.log").write_text(simulate(load_scenario("workstation-12gb-speech")).log_text)
    assert sh(tmp_path, "--db", "l.db", "init").returncode == 0
    fresh = sh(tmp_path, "--db", "l.db", "state").stdout.splitlines()
    assert [line.split(":")[0] for line in fresh] == ["chat", "idle"]
    assert sh(tmp_path, "--db", "l.db", "heal", "--deployment", "chat", "vllm.log").returncode == 0
    now = json.loads(sh(tmp_path, "--db", "l.db", "state", "--json").stdout)
    assert {s["deployment"]: s["runs_in_window"] for s in now} == {"chat": 1, "idle": 0}
    before = json.loads(sh(tmp_path, "--db", "l.db", "state", "--json", "--at", "-30d").stdout)
    assert {s["deployment"]: s["runs_in_window"] for s in before} == {"chat": 0, "idle": 0}


# -- 9. bad observe inputs -------------------------------------------------------------------------

def test_observe_of_an_empty_input_records_nothing_and_says_so(tmp_path):
    (tmp_path / "selfheal.toml").write_text(CHAT)
    (tmp_path / "empty.log").write_text("")
    for args, given in ((["-"], ""), (["empty.log"], None)):
        proc = sh(tmp_path, "--db", "l.db", "observe", *args, input=given)
        assert proc.returncode == 0 and "nothing recorded" in proc.stderr and proc.stdout == "", proc.stderr
    listed = sh(tmp_path, "--db", "l.db", "events", "--type", "IncidentCaptured")
    assert listed.stdout == ""


@pytest.mark.parametrize("url", ["notaurl", "ftp://x/metrics", "http://"])
def test_observe_refuses_an_unusable_metrics_url_at_once(tmp_path, url):
    (tmp_path / "selfheal.toml").write_text(CHAT)
    proc = sh(tmp_path, "--db", "l.db", "observe", "--metrics", url, timeout=20)
    assert proc.returncode == 2 and "--metrics" in proc.stderr


# -- 1. live output --------------------------------------------------------------------------------

def test_heal_prints_the_timeline_and_one_outcome_line(tmp_path):
    (tmp_path / "selfheal.toml").write_text(CHAT)
    (tmp_path / "vllm.log").write_text(simulate(load_scenario("workstation-12gb-speech")).log_text)
    proc = sh(tmp_path, "--db", "l.db", "heal", "vllm.log")
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line]
    assert all(re.match(ISO_Z, line) for line in lines[:-1]), lines
    assert [line for line in lines if line.startswith("outcome:")] == [lines[-1]]
    assert re.match(r"outcome: promoted\. Explore it: selfheal --db l\.db show \w{8}$", lines[-1]), lines[-1]
    assert proc.stderr == ""  # no progress on a pipe
