from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest
from click.testing import CliRunner

from selfheal.cli.main import cli
from selfheal.eventstore import open_store
from tests.conftest import T0, archived


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "log.db"
    with open_store(path, create=True) as store:
        store.append("intent-1", [archived(1, when=T0)])
        store.append("intent-2", [archived(2, when=T0.replace(hour=8))])
    return path


def run(*args, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], env=env, catch_exceptions=False)


def test_init_creates_log_and_default_path_honours_env(tmp_path):
    target = tmp_path / "state" / "x.db"
    result = run("init", "--json", env={"SELFHEAL_DB": str(target)})
    assert result.exit_code == 0 and json.loads(result.output)["events"] == 0
    assert target.exists()


def test_events_json_lines_have_every_column_and_data_as_object(db):
    result = run("--db", db, "events", "--json")
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [r["position"] for r in rows] == [1, 2]
    assert set(rows[0]) == {"position", "event_id", "stream", "version", "type", "schema_version", "occurred_at",
                            "recorded_at", "correlation_id", "causation_id", "data", "hash"}
    assert rows[0]["data"] == {"type": "IntentArchived", "intent_id": "1", "deployment": "chat",
                               "outcome": "promoted", "run_id": None}


@pytest.mark.parametrize("args, positions", [
    (["--stream", "intent-2"], [2]),
    (["--type", "IntentArchived", "--limit", "1"], [1]),
    (["--type", "RunRefused"], []),
    (["--after", "1"], [2]),
    (["--since", "2026-11-24T07:00:00Z"], [2]),
    (["--until", "2026-11-24T07:00:00Z"], [1]),
    (["--as-of", "1"], [1]),
])
def test_events_filters(db, args, positions):
    result = run("--db", db, "events", "--json", *args)
    assert [json.loads(line)["position"] for line in result.output.splitlines()] == positions


def test_verify_ok_and_broken(db):
    ok = run("--db", db, "verify")
    assert ok.exit_code == 0 and ok.output.startswith("ok: 2 events, head 2 ")
    conn = sqlite3.connect(db)
    conn.executescript("DROP TRIGGER events_refuse_update; UPDATE events SET stream = 'x' WHERE position = 2;")
    conn.close()
    broken = subprocess.run([sys.executable, "-m", "selfheal", "--db", str(db), "verify"], capture_output=True, text=True)
    assert broken.returncode == 1
    assert broken.stderr.strip().splitlines() == [
        "selfheal: verify failed at position 2: hash does not match the row's contents and the previous hash"]


def test_rebuild_reports_projections(db):
    result = run("--db", db, "rebuild", "--json")
    body = json.loads(result.output)
    assert body["position"] == 2 and body["projections"]["event_counts"]["total"] == 2


@pytest.mark.parametrize("content, message", [
    (None, "does not exist; create a log with `selfheal init`"),
    (b"not a database at all" * 100, "not a SQLite database"),
])
def test_bad_files_give_one_line_and_exit_1(tmp_path, content, message):
    path = tmp_path / "bad.db"
    if content is not None:
        path.write_bytes(content)
    proc = subprocess.run([sys.executable, "-m", "selfheal", "--db", str(path), "events"], capture_output=True, text=True)
    assert proc.returncode == 1
    assert len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_version():
    result = run("--version")
    assert result.exit_code == 0 and result.output.startswith("selfheal, version ")
