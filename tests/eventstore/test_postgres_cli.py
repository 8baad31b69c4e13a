"""`--db postgresql://...`, $SELFHEAL_DB and `selfheal migrate`, through the installed `selfheal`
run as a process against a real server (tests/eventstore/pgcluster.py)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SELFHEAL = shutil.which("selfheal", path=str(Path(sys.executable).parent)) or "selfheal"


def selfheal(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([SELFHEAL, *args], cwd=cwd, env=dict(os.environ, **(env or {})), capture_output=True,
                          text=True, timeout=120)


def test_a_file_log_migrates_to_the_server_and_reads_the_same_there(tmp_path, pg_url):
    assert selfheal("--db", "d.db", "demo", cwd=tmp_path).returncode == 0
    done = selfheal("migrate", "--from", "d.db", "--to", pg_url, "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    moved = json.loads(done.stdout)
    file_head = json.loads(selfheal("--db", "d.db", "verify", "--json", cwd=tmp_path).stdout)
    server = selfheal("--db", pg_url, "verify", "--json", cwd=tmp_path)
    assert server.returncode == 0, server.stderr
    server_head = json.loads(server.stdout)
    assert server_head["ok"] and moved["events"] == file_head["events"] > 0
    assert (server_head["head_position"], server_head["head_hash"]) == (file_head["head_position"],
                                                                        file_head["head_hash"])
    # $SELFHEAL_DB selects the server as --db does; history (sealed text, keys) reads the same
    history = selfheal("history", "--json", cwd=tmp_path, env={"SELFHEAL_DB": pg_url})
    assert history.returncode == 0, history.stderr
    assert json.loads(history.stdout) == json.loads(selfheal("--db", "d.db", "history", "--json", cwd=tmp_path).stdout)
    events = selfheal("--db", pg_url, "events", "--json", cwd=tmp_path).stdout
    assert events == selfheal("--db", "d.db", "events", "--json", cwd=tmp_path).stdout
    # a second copy into the same log would join two chains: refused in one line, nothing written
    again = selfheal("migrate", "--from", "d.db", "--to", pg_url, cwd=tmp_path)
    assert again.returncode == 1 and again.stderr.count("\n") == 1
    assert f"holds {moved['events']} events already; migrate into an empty log" in again.stderr


def test_a_damaged_file_log_is_not_copied(tmp_path, pg_url):
    import sqlite3

    assert selfheal("--db", "d.db", "demo", cwd=tmp_path).returncode == 0
    with sqlite3.connect(tmp_path / "d.db") as conn:
        conn.execute("DROP TRIGGER events_refuse_update")
        conn.execute("UPDATE events SET data = '{}' WHERE position = 3")
    done = selfheal("migrate", "--from", "d.db", "--to", pg_url, cwd=tmp_path)
    assert done.returncode == 1 and "does not verify" in done.stderr and "position 3" in done.stderr
    assert "nothing was copied" in done.stderr


def test_init_on_the_server_and_a_log_missing_there(tmp_path, pg_url):
    missing = selfheal("--db", pg_url, "history", cwd=tmp_path)
    assert missing.returncode == 1 and "holds no selfheal log" in missing.stderr
    done = selfheal("--db", pg_url, "init", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"path": pg_url, "events": 0}


@pytest.mark.parametrize("url", ["postgresql://nobody:hunter2@127.0.0.1:1/none"])
def test_a_server_that_cannot_be_reached_is_one_line_without_the_password(tmp_path, url):
    done = selfheal("--db", url, "history", cwd=tmp_path)
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert "cannot connect" in done.stderr and "hunter2" not in done.stderr
