"""Issue 16, a user's first hour: the installed `selfheal`, run as a subprocess the way a person
meets it. Exit codes, one time convention, nothing silently empty, one JSON shape per kind of
output, demo's log, the words, state, bad observe inputs, and live output."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from selfheal.edges.sim import load_scenario, simulate
from selfheal.eventstore import open_store
from tests.cli.installed import SELFHEAL, sh
from tests.conftest import T0, archived

ROOT = Path(__file__).resolve().parents[2]
ISO_Z = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z"
CHAT = '[deployments.chat]\nscenario = "workstation-12gb-speech"\n'
EXCERPT = ("ERROR 11-24 06:55:12 [core.py:708] ValueError: Free memory on device cuda:0 (8.41/11.66 GiB) on "
           "startup is less than desired GPU memory utilization (0.9, 10.49 GiB). Decrease GPU memory utilization "
           "or reduce GPU memory used by other processes.\n")


# -- 2. exit codes ---------------------------------------------------------------------------

def readme_exit_table() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"^## Using the command line\n.*?```\n(Exit codes \(every command\):\n.*?)```", text, re.S | re.M)
    assert match, "README.md's 'Using the command line' section lost its exit code table"
    return match.group(1)


def test_the_exit_code_table_is_the_same_in_help_and_readme(tmp_path):
    shown = sh(tmp_path, "--help").stdout
    table = shown[shown.index("Exit codes"):]
    assert [" ".join(line.split()) for line in table.splitlines() if line.strip()] == \
        [" ".join(line.split()) for line in readme_exit_table().splitlines() if line.strip()]


def test_demo_and_heal_exit_0_when_healed_and_3_when_not(tmp_path, demo_log):
    assert demo_log[1].splitlines()[-1].startswith("outcome: promoted.")
    escalated = sh(tmp_path, "--db", tmp_path / "x.db", "demo", "--scenario", "no-safe-fix")
    assert escalated.returncode == 3, escalated.stderr
    assert escalated.stdout.splitlines()[-1].startswith("outcome: alerted.")


def test_diagnose_exits_4_on_a_failure_and_0_on_a_healthy_log(tmp_path):
    assert sh(tmp_path, "diagnose", "-", input=EXCERPT).returncode == 4
    healthy = sh(tmp_path, "diagnose", "-", input="INFO 11-24 06:55:12 [gpu_worker.py:231] Available KV cache memory: 5.3 GiB\n")
    assert healthy.returncode == 0 and healthy.stdout.strip() == "No configuration failure found."


@pytest.mark.parametrize("args", [["events", "--type", "Bogus"], ["show", "nosuch"], ["demo", "--scenario", "nosuch"],
                                  ["events", "--since", "soon"]])
def test_names_that_name_nothing_and_bad_values_are_usage_errors(tmp_path, demo_log, args):
    assert sh(tmp_path, "--db", demo_log[0], *args).returncode == 2


def test_a_missing_file_is_exit_1_in_every_command(tmp_path):
    for args in (["diagnose", "nope.log"], ["rules", "test", "nope.toml", "-"], ["rules", "propose", "nope.toml"]):
        proc = sh(tmp_path, "--db", tmp_path / "l.db", *args, input="")
        assert proc.returncode == 1 and "nope" in proc.stderr and len(proc.stderr.splitlines()) == 1, (args, proc)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_sigint_and_sigterm_exit_130_in_a_watch(tmp_path, sig):
    (tmp_path / "selfheal.toml").write_text(CHAT)
    (tmp_path / "v.log").write_text("")  # there already: a missing one gets a note of its own
    proc = subprocess.Popen([SELFHEAL, "--db", str(tmp_path / "l.db"), "observe", "--follow", str(tmp_path / "v.log")],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130 and err == "selfheal: interrupted\n", err


@pytest.fixture(scope="module")
def big_log(tmp_path_factory):
    path = tmp_path_factory.mktemp("big") / "big.db"
    with open_store(path, create=True) as store:
        store.append_many([(f"intent-{i}", [archived(i)]) for i in range(3000)])
    return path


@pytest.mark.parametrize("args", [["events"], ["events", "--json"], ["events", "--table"]])
def test_a_closed_pipe_ends_quietly(tmp_path, big_log, args):
    proc = subprocess.run(f"'{SELFHEAL}' --db '{big_log}' {' '.join(args)} | head -1; echo \"rc=${{PIPESTATUS[0]}}\" >&2",
                          shell=True, executable="/bin/bash", capture_output=True, text=True, timeout=60)
    assert len(proc.stdout.splitlines()) == 1
    assert proc.stderr == "rc=141\n", proc.stderr


# -- 3. one time convention --------------------------------------------------------------------

def test_every_time_shown_is_iso_utc_with_z(tmp_path, demo_log):
    db, out = demo_log
    timeline = [line for line in out.splitlines() if line[:1].isdigit()]
    assert timeline and all(re.match(ISO_Z + "  ", line) for line in timeline), timeline[:3]
    for args in (["history"], ["intents"], ["events"]):
        shown = sh(tmp_path, "--db", db, *args).stdout
        assert re.search(ISO_Z, shown) and "+00:00" not in shown, (args, shown)


def test_simulated_time_never_dates_an_event_after_it_was_recorded(demo_log):
    rows = [json.loads(line) for line in sh(demo_log[0].parent, "--db", demo_log[0], "events", "--json").stdout.splitlines()]
    assert all(r["occurred_at"] <= r["recorded_at"] for r in rows), [(r["type"], r["occurred_at"], r["recorded_at"])
                                                                    for r in rows if r["occurred_at"] > r["recorded_at"]]
    durations = [r["data"]["measurements"]["duration_s"] for r in rows if r["type"] == "CanaryCompleted"]
    assert durations and all(d > 0 for d in durations)  # the simulated time stays in the measurements
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    until_now = sh(demo_log[0].parent, "--db", demo_log[0], "events", "--until", now).stdout.splitlines()
    assert len(until_now) == len(rows)


def test_a_time_without_zone_is_utc_whatever_the_machine_zone(tmp_path):
    db = tmp_path / "l.db"
    with open_store(db, create=True) as store:
        store.append("a", [archived(1, when=T0)])
        store.append("b", [archived(2, when=T0 + timedelta(hours=2))])
    naive = (T0 + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")
    for tz in ("UTC", "Asia/Tokyo", "America/New_York"):
        shown = sh(tmp_path, "--db", db, "events", "--since", naive, env={"TZ": tz}).stdout.splitlines()
        assert [line.split()[0] for line in shown] == ["2"], (tz, shown)


@pytest.mark.parametrize("value", ["-2h", "yesterday", "now", "-30m", "2026-11-24", "2026-11-24T06:00:00+02:00"])
def test_relative_and_partial_times_are_accepted(tmp_path, demo_log, value):
    proc = sh(tmp_path, "--db", demo_log[0], "events", "--since", value)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("args, option", [(["events", "--until", "2026-13-01"], "--until"),
                                          (["history", "--as-of", "tomorrowish"], "--as-of"),
                                          (["state", "--at", "2026-11-24T25:00"], "--at"),
                                          (["events", "--as-of", "9" * 30], "--as-of"),
                                          (["events", "--after", "9" * 30], "--after")])
def test_a_bad_time_or_position_names_its_option(tmp_path, demo_log, args, option):
    proc = sh(tmp_path, "--db", demo_log[0], *args)
    assert proc.returncode == 2 and option in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "OverflowError" not in proc.stderr


# -- 4. nothing silently empty --------------------------------------------------------------------

@pytest.mark.parametrize("args, listed", [(["events", "--type", "Bogus"], "RunFinished"),
                                          (["history", "--deployment", "nosuch"], "workstation-12gb-speech"),
                                          (["baseline", "nosuch"], "workstation-12gb-speech"),
                                          (["alerts", "--deployment", "nosuch"], "workstation-12gb-speech"),
                                          (["events", "--stream", "nosuch"], "nosuch"),
                                          (["demo", "--scenario", "nosuch"], "no-safe-fix")])
def test_unknown_names_are_errors_that_list_what_exists(tmp_path, demo_log, args, listed):
    proc = sh(tmp_path, "--db", demo_log[0], *args)
    assert proc.returncode == 2 and listed in proc.stderr, proc.stderr


def test_short_ids_work_for_stream_and_correlation_and_show_names_the_incident(tmp_path, demo_log):
    db = demo_log[0]
    run_id = re.search(r"show (\w{8})", demo_log[1]).group(1)
    shown = sh(tmp_path, "--db", db, "show", run_id).stdout
    incident = re.search(r"; incident ([0-9a-f-]{36})", shown.splitlines()[0]).group(1)
    by_stream = sh(tmp_path, "--db", db, "events", "--stream", run_id).stdout.splitlines()
    assert by_stream and all(f"run-{run_id}" in line for line in by_stream)
    by_correlation = sh(tmp_path, "--db", db, "events", "--correlation", incident[:8]).stdout.splitlines()
    full = sh(tmp_path, "--db", db, "events", "--correlation", incident).stdout.splitlines()
    assert by_correlation == full and len(full) > 10
    assert sh(tmp_path, "--db", db, "export", incident[:8]).returncode == 0


# -- 5. one JSON shape per kind of output ---------------------------------------------------------

ENVELOPE = {"position", "event_id", "stream", "version", "type", "schema_version", "occurred_at", "recorded_at",
            "correlation_id", "causation_id", "data", "hash"}


def test_event_streams_are_json_lines_in_the_events_envelope(tmp_path):
    (tmp_path / "selfheal.toml").write_text(CHAT)
    (tmp_path / "vllm.log").write_text(simulate(load_scenario("workstation-12gb-speech")).log_text)
    streams = {"demo": sh(tmp_path, "--db", tmp_path / "d.db", "demo", "--json"),
               "heal": sh(tmp_path, "--db", tmp_path / "h.db", "heal", "--json", "vllm.log")}
    for name, proc in streams.items():
        assert proc.returncode == 0, (name, proc.stderr)
        rows = [json.loads(line) for line in proc.stdout.splitlines()]
        assert rows and all(set(r) == ENVELOPE for r in rows), name
        assert any(r["type"] == "RunFinished" for r in rows), name
    listed = sh(tmp_path, "--db", tmp_path / "h.db", "events", "--json").stdout.splitlines()
    assert [json.loads(line) for line in listed] == \
        [json.loads(line) for line in streams["heal"].stdout.splitlines()]


def test_reports_are_one_document_and_rows_come_as_table_or_csv(tmp_path, demo_log):
    listing = json.loads(sh(tmp_path, "demo", "--list", "--json").stdout)
    assert "no-safe-fix" in listing
    table = sh(tmp_path, "--db", demo_log[0], "history", "--table").stdout.splitlines()
    assert table[0].split() == ["requested_at", "run_id", "deployment", "status", "canaries", "detail"]
    csv_rows = sh(tmp_path, "--db", demo_log[0], "history", "--csv").stdout.splitlines()
    assert csv_rows[0] == "requested_at,run_id,deployment,status,canaries,detail" and len(csv_rows) == 2
    assert sh(tmp_path, "--db", demo_log[0], "history", "--csv", "--json").returncode == 2
