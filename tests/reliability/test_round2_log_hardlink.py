"""Issue 13, round two, item 15: a log reached through a hard link got a second runner lock (the
lock sits beside the name, `<name>.runner-lock`), so two runners both handled every event. SQLite
keeps its -wal and -shm beside the name too, so two names for one log are two write-ahead logs
for one file. A log file with more than one name is refused, with one line saying why."""
from __future__ import annotations

import os

import pytest

from selfheal.eventstore import open_store
from selfheal.eventstore.errors import StoreError
from selfheal.handlers.runtime import Runner, _exclusive
from tests.conftest import archived
from tests.reliability.hostile import assert_one_line_error, selfheal
from tests.reliability.procs import Stamp


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "log.db"
    with open_store(path, create=True) as store:
        store.append("in", [archived(i) for i in range(3)])
    return path


def test_a_second_name_never_lets_a_second_runner_in(tmp_path, db):
    with open_store(db) as store, _exclusive(store):  # a runner holds the log by its first name
        os.link(db, tmp_path / "link.db")
        # a runner through the other name must not get in: before, it took `link.db.runner-lock`
        # and handled the log beside the first (exit 0 here, at once)
        result = selfheal(tmp_path, "--db", str(tmp_path / "link.db"), "run", timeout=30)
    assert_one_line_error(result)
    assert "link.db" in result.err and "2 names" in result.err, result.err


def test_either_name_is_refused_until_the_other_is_gone_and_nothing_is_lost(tmp_path, db):
    link = tmp_path / "link.db"
    os.link(db, link)
    for name in (db, link):
        with pytest.raises(StoreError, match="hard link"):
            open_store(name)
    os.unlink(link)
    with open_store(db) as store:
        assert store.last_position() == 3 and store.recorder.verify().ok


def test_a_runner_opened_before_the_second_name_appeared_stops(tmp_path, db):
    with open_store(db) as store:
        os.link(db, tmp_path / "link.db")
        with pytest.raises(StoreError, match="hard link"):
            Runner(store, [Stamp()]).run_until_idle()
        assert store.recorder.checkpoints() == {}
