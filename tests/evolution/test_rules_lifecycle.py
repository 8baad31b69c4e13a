"""Rule evolution end to end: verdicts, a candidate with a planted disagreement, shadow
evaluation, the approval gate in prod, promotion, and the observer using the new rules."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone

import pytest
from click.testing import CliRunner

from selfheal.cli.main import cli
from selfheal.handlers import rules_lifecycle
from selfheal.handlers.observer import builtin_ruleset, parse_rules
from selfheal.handlers.observer.rules import builtin_rule_text
from tests.evolution.test_replay import history  # noqa: F401  (the fixture)

NOW = datetime(2026, 11, 25, tzinfo=timezone.utc)
STARTUP_FIX = "free_gib * (1 - buffer) / total_gib"


def candidate_text() -> str:
    """The built-in rules, with the startup seed fix keeping twice the buffer back."""
    text = builtin_rule_text()
    assert STARTUP_FIX in text
    return (text.replace(STARTUP_FIX, "free_gib * (1 - 2 * buffer) / total_gib")
            .replace('version = "builtin-2"', 'version = "candidate-1"', 1))


def test_planted_disagreement_is_found_and_promotion_is_gated(history, tmp_path):  # noqa: F811
    folder, settings, edges, store, _ = history
    rules_file = tmp_path / "candidate.toml"
    rules_file.write_text(candidate_text())
    proposed = rules_lifecycle.propose(store, str(rules_file), NOW)
    assert proposed.ruleset_id == parse_rules(rules_file.read_text()).digest != builtin_ruleset().digest

    with pytest.raises(rules_lifecycle.RulesError, match="no shadow report exists"):
        rules_lifecycle.promote(store, settings, proposed.ruleset_id, "ana", NOW)

    incidents = [r.event for r in store.read(types=["IncidentCaptured"])]
    production = [i for i in incidents if i.source.kind == "file"]
    rules_lifecycle.verdict(store, production[0].incident_id[:8], "startup_free_memory_below_utilization", "ana", NOW)
    report = rules_lifecycle.shadow(store, proposed.ruleset_id[:12], NOW)
    assert report.incidents == len(incidents)
    differing = {d["incident_id"] for d in report.disagreements}
    assert differing == {i.incident_id for i in production}  # every startup failure, nothing else
    assert report.agreements == len(incidents) - len(production)
    sample = report.disagreements[0]
    assert '"gpu_memory_utilization":0.6' in sample["active"] and '"gpu_memory_utilization":0.55' in sample["candidate"]
    assert "on startup is less than desired GPU memory utilization" in sample["lines"]
    assert (report.labelled, report.precision, report.recall) == (1, 1.0, 1.0)

    prod = settings.model_copy(update={"mode": "prod"})
    with pytest.raises(rules_lifecycle.RulesError, match="needs an approval of report"):
        rules_lifecycle.promote(store, prod, proposed.ruleset_id, "ana", NOW)
    rules_lifecycle.approve(store, proposed.ruleset_id, "bo", NOW)
    activated = rules_lifecycle.promote(store, prod, proposed.ruleset_id, "ana", NOW)
    assert activated.report_hash == report.report_hash and activated.version == "candidate-1"

    # the observer now reads with the promoted rules, loaded from the text in the log
    runner = CliRunner()
    base = ["--db", str(folder / "log.db"), "--config", str(folder / "selfheal.toml")]
    listed = json.loads(runner.invoke(cli, [*base, "rules", "list", "--json"], catch_exceptions=False).output)
    assert listed["active"]["ruleset_id"] == proposed.ruleset_id and listed["active"]["version"] == "candidate-1"
    log = folder / "again.log"
    log.write_text(production[0].raw_text)
    runner.invoke(cli, [*base, "heal", str(log)], catch_exceptions=False)
    last = [r.event for r in store.read(types=["ObservationMade"]) if not r.event.canary_id][-1]
    assert last.finding.fix == {"gpu_memory_utilization": 0.55}

    # diagnose, given the log, reads with its active rules too; without a log, the built-in ones
    def diagnosed(*db: str) -> dict:
        done = subprocess.run([sys.executable, "-m", "selfheal", *db, "diagnose", str(log), "--json"],
                              capture_output=True, text=True, cwd=tmp_path, timeout=60,
                              env={k: v for k, v in os.environ.items() if k != "SELFHEAL_DB"})
        assert done.returncode == 4, done.stderr  # a failure found
        return json.loads(done.stdout)["primary"]["fix"]
    assert diagnosed("--db", str(folder / "log.db")) == {"gpu_memory_utilization": 0.55}
    assert diagnosed() == {"gpu_memory_utilization": 0.6}


def test_rules_test_reads_a_file_without_a_store(tmp_path):
    rules_file = tmp_path / "candidate.toml"
    rules_file.write_text(candidate_text())
    log = tmp_path / "x.log"
    log.write_text("ValueError: Free memory on device cuda:0 (8.41/11.66 GiB) on startup is less than desired GPU "
                   "memory utilization (0.9, 10.49 GiB). Decrease GPU memory utilization or reduce GPU memory "
                   "used by other processes.\n")
    out = CliRunner().invoke(cli, ["--db", str(tmp_path / "no.db"), "rules", "test", str(rules_file), str(log),
                                   "--json"], catch_exceptions=False)
    assert json.loads(out.output)["primary"]["fix"] == {"gpu_memory_utilization": 0.55}
    assert not (tmp_path / "no.db").exists()


def test_a_broken_rule_file_is_refused_precisely(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rule]]\nid = "x"\nkind = "no_kv_cache_memory"\nprefilter = "boom"\npatterns = ["(unclosed"]\n')
    proc = subprocess.run([sys.executable, "-m", "selfheal", "--db", str(tmp_path / "l.db"), "rules", "propose",
                           str(bad)], capture_output=True, text=True)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith(f"selfheal: error: {bad}:5: rule 'x': pattern 1: bad regular expression: missing )")


def test_verdicts_take_known_kinds_only(history):  # noqa: F811
    _, _, _, store, _ = history
    incident = next(store.read(types=["IncidentCaptured"])).event.incident_id
    with pytest.raises(rules_lifecycle.RulesError, match="allowed: none"):
        rules_lifecycle.verdict(store, incident, "gremlins", "ana", NOW)
    recorded = rules_lifecycle.verdict(store, incident, "none", "ana", NOW, note="a drill")
    assert recorded.kind == "none"
