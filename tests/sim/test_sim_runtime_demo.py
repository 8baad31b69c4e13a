"""`selfheal demo` heals runtime failures end to end (issue 15.8): the simulated server's /metrics
go through production's watcher, the observer reads its lines, and the loop heals them. The
installed `selfheal`, run as a subprocess, on a real SQLite log."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from selfheal.edges.sim import load_scenario, simulate
from selfheal.handlers.observer import builtin_ruleset

SELFHEAL = shutil.which("selfheal", path=str(Path(sys.executable).parent)) or "selfheal"
REFUSAL_RULE = "selfheal.metrics.requests_rejected"


def demo(tmp_path: Path, scenario: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    db = tmp_path / "demo.db"
    done = subprocess.run([SELFHEAL, "demo", "--scenario", scenario, "--out", str(db), "--json"],
                          capture_output=True, text=True, timeout=120)
    events = subprocess.run([SELFHEAL, "--db", str(db), "events", "--json"], capture_output=True, text=True,
                            timeout=60)
    assert events.returncode == 0, events.stderr
    return done, [json.loads(x) for x in events.stdout.splitlines() if x.strip()]


def _of(events: list[dict], kind: str) -> list[dict]:
    return [e for e in events if e["type"] == kind]


def _promoted(events: list[dict]) -> dict:
    [proposed] = _of(events, "PromotionProposed")
    return proposed["data"]["config"]


def test_demo_heals_a_preemption_storm_seen_on_metrics(tmp_path):
    done, events = demo(tmp_path, "rt-preemption-storm-l4")
    assert done.returncode == 0, done.stdout + done.stderr       # 0: promoted
    first = _of(events, "ObservationMade")[0]["data"]["finding"]
    assert first["kind"] == "preemption_storm"
    assert first["rule"] == "selfheal.metrics.preemptions"    # read from the watcher's line, not the log
    config = _promoted(events)
    s = load_scenario("rt-preemption-storm-l4")
    assert config["max_num_seqs"] < s.current.max_num_seqs
    # the promoted config holds the watcher's threshold under the same load
    healed = simulate(s, s.current.changed(**config), render=False)
    assert healed.passed_load and healed.metrics_symptoms == []


@pytest.mark.xfail(REFUSAL_RULE not in {r.id for r in builtin_ruleset().rules}, strict=True,
                   reason=f"needs the observer rule {REFUSAL_RULE} (40_metrics.toml) for the watcher's refusal line")
def test_demo_heals_refused_over_long_prompts_seen_on_metrics(tmp_path):
    done, events = demo(tmp_path, "rt-refused-long-prompts-a10g")
    assert done.returncode == 0, done.stdout + done.stderr
    first = _of(events, "ObservationMade")[0]["data"]["finding"]
    assert (first["kind"], first["rule"]) == ("requests_rejected", REFUSAL_RULE)
    config = _promoted(events)
    s = load_scenario("rt-refused-long-prompts-a10g")
    assert config["max_model_len"] > s.current.max_model_len
    healed = simulate(s, s.current.changed(**config), render=False)
    assert healed.passed_load and healed.rejected_requests == 0 and healed.metrics_symptoms == []


def test_the_demos_incident_holds_the_watchers_line(tmp_path):
    _, events = demo(tmp_path, "rt-refused-long-prompts-a10g")
    incident = _of(events, "IncidentCaptured")[0]["data"]
    text = json.dumps(incident)
    assert "selfheal metrics: sustained request refusals:" in text


@pytest.mark.parametrize("scenario, feature", [
    ("sw-mistral7b-v01-rtx3090-comfyui", "sliding_window"),
    ("fp8kv-llama8b-l4-64k", "kv_cache_dtype=fp8"),
])
def test_demo_heals_the_scenarios_of_the_more_faithful_simulator(tmp_path, scenario, feature):
    done, events = demo(tmp_path, scenario)
    assert done.returncode == 0, done.stdout + done.stderr
    config = _promoted(events)
    s = load_scenario(scenario)
    healed = simulate(s, s.current.changed(**config))
    assert healed.passed_load and healed.metrics_symptoms == []
    # the promotion serves the whole context production asked for, which only the feature makes fit
    assert config["max_model_len"] == s.current.max_model_len
    assert (s.model.sliding_window is not None) if feature == "sliding_window" else s.engine.kv_fp8


def test_heal_of_a_sim_deployment_reads_the_watchers_line_like_a_log(tmp_path):
    """`selfheal heal` on what production's watcher wrote of the simulated server (its symptom
    line, as `observe --metrics` records it) heals the deployment like the demo does."""
    scenario = "rt-preemption-storm-l4"
    (tmp_path / "selfheal.toml").write_text(f'mode = "dev"\n[deployments.chat]\nscenario = "{scenario}"\n')
    production = simulate(load_scenario(scenario))
    symptom = tmp_path / "metrics.txt"
    symptom.write_text(production.metrics_symptoms[-1] + "\n")
    assert "sustained preemptions" in symptom.read_text()
    done = subprocess.run([SELFHEAL, "--db", str(tmp_path / "log.db"), "--config", str(tmp_path / "selfheal.toml"),
                           "heal", "--deployment", "chat", str(symptom)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "promoted" in done.stdout and "max_num_seqs" in done.stdout
