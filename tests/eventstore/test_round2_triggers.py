"""Issue 13, round two, item 14: `verify` checks what the append-only triggers do, not only
their names. Triggers replaced under the same names with `WHEN 0` bodies passed `verify`, and
a DELETE then succeeded unreported."""
from __future__ import annotations

import sqlite3

import pytest

from selfheal.eventstore.sqlite import SQLiteRecorder
from selfheal.eventstore.store import open_store
from tests.conftest import archived
from tests.eventstore.test_sqlite_file import log  # noqa: F401 - the fixture: a log of five events
from tests.reliability.hostile import assert_one_line_error, selfheal


def _hand_typed(rec: SQLiteRecorder, script: str) -> None:
    conn = sqlite3.connect(rec.path)
    conn.executescript(script)
    conn.close()


DISARMED = ("DROP TRIGGER events_refuse_update; DROP TRIGGER events_refuse_delete;"
            "CREATE TRIGGER events_refuse_update BEFORE UPDATE ON events WHEN 0 BEGIN "
            "SELECT RAISE(ABORT, 'selfheal: the events table is append-only: UPDATE is refused'); END;"
            "CREATE TRIGGER events_refuse_delete BEFORE DELETE ON events WHEN 0 BEGIN "
            "SELECT RAISE(ABORT, 'selfheal: the events table is append-only: DELETE is refused'); END;")


def test_triggers_replaced_with_when_0_are_a_break(log):
    _hand_typed(log, DISARMED)
    report = log.verify()
    assert not report.ok and report.first_break.position is None
    assert "events_refuse_update" in report.first_break.problem
    assert "events_refuse_delete" in report.first_break.problem
    assert "replaced" in report.first_break.problem
    # what the disarmed triggers let through: the newest row goes, and the chain cannot tell
    _hand_typed(log, "DELETE FROM events WHERE position = 5")
    report = log.verify()
    assert not report.ok and "events_refuse_delete" in report.first_break.problem


@pytest.mark.parametrize("body", [
    "SELECT RAISE(IGNORE)",                         # refuses nothing loudly: a DELETE 'succeeds'
    "SELECT 1",                                     # refuses nothing at all
    "SELECT RAISE(ABORT, 'selfheal: the events table is append-only: DELETE is refused') WHERE 0",
])
def test_any_other_body_is_a_break(log, body):
    _hand_typed(log, f"DROP TRIGGER events_refuse_delete; "
                     f"CREATE TRIGGER events_refuse_delete BEFORE DELETE ON events BEGIN {body}; END;")
    report = log.verify()
    assert not report.ok and "events_refuse_delete" in report.first_break.problem


def test_a_trigger_added_on_events_is_a_break(log):
    # a BEFORE INSERT that ignores every new row: appends would 'succeed' and store nothing
    _hand_typed(log, "CREATE TRIGGER swallow BEFORE INSERT ON events BEGIN SELECT RAISE(IGNORE); END;")
    report = log.verify()
    assert not report.ok and "swallow" in report.first_break.problem


def test_the_same_trigger_typed_again_differently_is_not_a_break(log):
    _hand_typed(log, "DROP TRIGGER events_refuse_delete; "
                     "create trigger events_refuse_delete\n  before delete on events\nbegin\n"
                     "  select raise(ABORT, 'selfheal: the events table is append-only: DELETE is refused');\nend;")
    assert log.verify().ok


def test_selfheal_verify_says_which_trigger_was_replaced(tmp_path):
    db = tmp_path / "log.db"
    with open_store(db, create=True) as store:
        store.append("in", [archived(i) for i in range(3)])
    conn = sqlite3.connect(db)
    conn.executescript(DISARMED)
    conn.close()
    result = selfheal(tmp_path, "--db", str(db), "verify")
    assert_one_line_error(result)
    assert "verify failed at log:" in result.err and "events_refuse_delete" in result.err, result.err
