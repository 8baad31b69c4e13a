"""What only a real SQLite file can show: triggers, tampering, bad files, processes."""
from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import textwrap

import pytest

from selfheal.eventstore.errors import LogMissing, NewerFormat, NotASelfhealLog
from selfheal.eventstore.sqlite import FORMAT_VERSION, SQLiteRecorder
from tests.eventstore.contract import ev


@pytest.fixture
def log(tmp_path, clock):
    rec = SQLiteRecorder(tmp_path / "log.db", create=True, clock=clock)
    rec.append("a", [ev(i) for i in range(1, 6)])
    yield rec
    rec.close()


def test_wal_and_full_sync_by_default(log):
    conn = log.connection
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_synchronous_is_configurable(tmp_path):
    rec = SQLiteRecorder(tmp_path / "n.db", create=True, synchronous="normal")
    assert rec.connection.execute("PRAGMA synchronous").fetchone()[0] == 1
    with pytest.raises(ValueError, match="allowed values"):
        SQLiteRecorder(tmp_path / "n.db", synchronous="sometimes")


def test_new_log_is_owner_only(log):
    assert stat.S_IMODE(os.stat(log.path).st_mode) == 0o600


@pytest.mark.parametrize("sql", ["UPDATE events SET data = '{}' WHERE position = 2",
                                 "DELETE FROM events WHERE position = 2"])
def test_database_refuses_update_and_delete(log, sql):
    # a separate connection, as a person with the sqlite3 shell would use
    conn = sqlite3.connect(log.path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute(sql)
    conn.close()
    assert log.verify().ok


def test_tampering_behind_the_triggers_is_found(log):
    conn = sqlite3.connect(log.path)
    conn.executescript(
        "DROP TRIGGER events_refuse_update;"
        "UPDATE events SET data = '{\"n\":99}' WHERE position = 3;"
        "CREATE TRIGGER events_refuse_update BEFORE UPDATE ON events BEGIN SELECT RAISE(ABORT, 'x'); END;"
    )
    conn.close()
    report = log.verify()
    assert not report.ok
    assert report.first_break.position == 3
    assert "hash" in report.first_break.problem


def test_deleted_row_is_found(log):
    conn = sqlite3.connect(log.path)
    conn.executescript("DROP TRIGGER events_refuse_delete; DELETE FROM events WHERE position = 4;")
    conn.close()
    report = log.verify()
    assert not report.ok and report.first_break.position == 4
    assert "missing" in report.first_break.problem


def test_dropped_triggers_alone_are_reported(log):
    conn = sqlite3.connect(log.path)
    conn.execute("DROP TRIGGER events_refuse_delete")
    conn.close()
    report = log.verify()
    assert not report.ok and report.first_break.position is None
    assert "events_refuse_delete" in report.first_break.problem


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(LogMissing, match="does not exist"):
        SQLiteRecorder(tmp_path / "none.db")
    (tmp_path / "empty.db").write_bytes(b"")
    with pytest.raises(LogMissing, match="empty"):
        SQLiteRecorder(tmp_path / "empty.db")


def test_garbage_file_is_not_a_log(tmp_path):
    path = tmp_path / "garbage.db"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(NotASelfhealLog, match="not a SQLite database"):
        SQLiteRecorder(path)
    assert path.stat().st_size == 4096


def test_truncated_log_gives_a_clear_error(log, tmp_path):
    log.close()
    data = log.path.read_bytes()
    cut = tmp_path / "cut.db"
    cut.write_bytes(data[:100])
    with pytest.raises((NotASelfhealLog, LogMissing)):
        SQLiteRecorder(cut)


def test_other_sqlite_database_is_not_a_log(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(NotASelfhealLog, match="not a selfheal log"):
        SQLiteRecorder(path)


def test_newer_format_is_refused(log):
    log.connection.execute(f"PRAGMA user_version = {FORMAT_VERSION + 1}")
    log.close()
    with pytest.raises(NewerFormat, match="newer selfheal"):
        SQLiteRecorder(log.path)


def test_tables_are_queryable_with_sqlite_utils(log):
    import sqlite_utils

    db = sqlite_utils.Database(log.path)
    assert db["events"].columns_dict.keys() >= {"position", "event_id", "stream", "version", "type",
                                                "schema_version", "occurred_at", "recorded_at",
                                                "correlation_id", "causation_id", "data", "hash"}
    indexes = {i.name for i in db["events"].indexes}
    assert {"events_type", "events_stream_version", "events_correlation", "events_event_id"} <= indexes
    assert db.execute("SELECT json_extract(data, '$.n') FROM events WHERE position = 2").fetchone()[0] == 2


APPENDER = textwrap.dedent("""
    import sys
    from selfheal.eventstore.sqlite import SQLiteRecorder
    from selfheal.eventstore.recorder import NewEvent
    path, who, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rec = SQLiteRecorder(path)
    for i in range(count):
        rec.append(f"{who}-{i % 7}", [NewEvent(event_id=f"{who}-{i}", type="T", schema_version=1,
                   occurred_at="2026-11-24T06:00:00.000000Z", data='{"i":%d}' % i)])
""")


def test_processes_appending_at_once_lose_nothing(tmp_path):
    path = tmp_path / "shared.db"
    SQLiteRecorder(path, create=True).close()
    procs = [subprocess.Popen([sys.executable, "-c", APPENDER, str(path), f"w{n}", "300"]) for n in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    rec = SQLiteRecorder(path)
    rows = list(rec.read())
    assert [r.position for r in rows] == list(range(1, 901))
    assert len({r.event_id for r in rows}) == 900
    for n in range(3):
        # each writer's own events keep their order, and every stream is gap-free
        mine = [int(r.event_id.split("-")[1]) for r in rows if r.event_id.startswith(f"w{n}-")]
        assert mine == list(range(300))
        for s in range(7):
            assert [r.version for r in rec.read_stream(f"w{n}-{s}")] == list(range(1, len(range(s, 300, 7)) + 1))
    assert rec.verify().ok
