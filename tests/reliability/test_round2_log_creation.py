"""Processes that create one log at once: the losers of the creation race wait for the
winner's migration instead of calling the half-made file "not a selfheal log" (issue 13.1's
race again, one step earlier: observes started together on a log that does not exist yet)."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from selfheal.eventstore import open_store
from selfheal.eventstore.sqlite import FORMAT_VERSION

ROOT = Path(__file__).resolve().parents[2]


def test_a_database_the_creator_has_not_migrated_yet_is_taken_as_a_new_log(tmp_path):
    path = tmp_path / "log.db"
    half_made = sqlite3.connect(path)  # what a creating process leaves before its tables exist
    half_made.execute("PRAGMA journal_mode=WAL")
    half_made.close()
    assert path.stat().st_size > 0
    with open_store(path, create=True) as store:
        assert store.recorder.connection.execute("PRAGMA user_version").fetchone()[0] == FORMAT_VERSION
        assert store.recorder.verify().ok


def test_a_database_with_tables_of_its_own_is_still_refused(tmp_path):
    path = tmp_path / "other.db"
    other = sqlite3.connect(path)
    other.execute("CREATE TABLE notes (text TEXT)")
    other.commit()
    other.close()
    try:
        open_store(path, create=True)
    except Exception as e:  # noqa: BLE001 - the type is the store's, the words are what matter
        assert "not a selfheal log" in str(e)
    else:
        raise AssertionError("another application's database was taken as a log")


def test_observes_started_together_on_a_log_that_does_not_exist_yet_all_record(tmp_path):
    (tmp_path / "selfheal.toml").write_text('mode = "dev"\n[deployments.d0]\nscenario = "workstation-12gb-speech"\n')
    log = tmp_path / "vllm.log"
    log.write_text("ERROR 11-24 06:55:12 [core.py:708] ValueError: No available memory for the cache blocks.\n")
    failures = []
    for round_ in range(4):
        db = tmp_path / f"log-{round_}.db"
        procs = [subprocess.Popen([sys.executable, "-m", "selfheal", "--db", str(db), "--config",
                                   str(tmp_path / "selfheal.toml"), "observe", "--deployment", "d0", str(log)],
                                  cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
        failed_here = 0
        for p in procs:
            _, err = p.communicate(timeout=120)
            if p.returncode != 0:
                failures.append(err.strip())
                failed_here += 1
        with open_store(db) as store:  # every observe that exited 0 left its incident
            assert sum(1 for _ in store.read(types=["IncidentCaptured"])) == 4 - failed_here
    assert not failures, f"{len(failures)} of 16 observes failed: {failures[:2]}"


def test_a_log_its_creator_finishes_between_the_readers_reads_is_taken(tmp_path, monkeypatch):
    # the interleaving that made one of 16 observes started together fail under load: a reader saw
    # the half-made file's application_id 0, then the creator committed its migration, then the
    # reader found tables in what it had taken for an empty database
    from selfheal.eventstore.sqlite import SQLiteRecorder

    path = tmp_path / "log.db"
    half_made = sqlite3.connect(path)
    half_made.execute("PRAGMA journal_mode=WAL")
    half_made.close()
    real, done = SQLiteRecorder._being_created, []

    def creator_finishes_first(self):
        if not done:
            done.append(True)
            with open_store(path, create=True):  # the creator migrates now, between the reads
                pass
        return real(self)

    monkeypatch.setattr(SQLiteRecorder, "_being_created", creator_finishes_first)
    with open_store(path, create=True) as store:
        assert store.recorder.verify().ok


@pytest.mark.parametrize("winner_got_as_far_as", ["the empty file", "the whole log"])
def test_a_log_another_process_creates_between_the_look_and_the_create_is_taken(tmp_path, monkeypatch,
                                                                               winner_got_as_far_as):
    # the interleaving that failed one of 16 observes on CI: this process saw no file, another
    # created it, and this one's exclusive create then met "File exists"
    path = tmp_path / "log.db"
    real_open, done = os.open, []

    def another_process_creates_first(file, flags, *args, **kwargs):
        if flags & os.O_EXCL and not done:
            done.append(True)
            if winner_got_as_far_as == "the empty file":
                os.close(real_open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            else:
                with open_store(path, create=True):
                    pass
        return real_open(file, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", another_process_creates_first)
    with open_store(path, create=True) as store:
        assert store.recorder.verify().ok
    assert done
