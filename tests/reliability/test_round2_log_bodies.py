"""Issue 13, round two, item 5, through the CLI: one undecodable row gives one line that names
its position, from every command that decodes it; `verify` reports it; `events` lists it."""
from __future__ import annotations

import pytest

from selfheal.eventstore import open_store
from selfheal.eventstore.recorder import NewEvent
from tests.conftest import archived
from tests.reliability.hostile import assert_one_line_error, selfheal

DEEP = 100_000
#: an IntentArchived whose unknown field is nested 100k deep: the typed decoder skips it recursively
DEEP_UNKNOWN_FIELD = ('{"x":' + "[" * DEEP + "]" * DEEP + ',"intent_id":"i","deployment":"chat","outcome":"promoted"}')
#: an IncidentCaptured of the old version 1: decoded untyped before it is upcast
DEEP_OLD_INCIDENT = "[" * DEEP + "]" * DEEP


def _log(path, type_name: str, version: int, body: str) -> None:
    with open_store(path, create=True) as store:
        store.append("in", [archived(1)])
        store.recorder.append("bad", [NewEvent(event_id="bad", type=type_name, schema_version=version,
                                               occurred_at="2026-11-24T06:00:00.000000Z", data=body)])
        store.append("in", [archived(3)])


@pytest.mark.parametrize("command", ["history", "rebuild", "run", "state"])
def test_a_deep_body_stops_a_command_with_its_position(tmp_path, command):
    db = tmp_path / "log.db"
    _log(db, "IntentArchived", 1, DEEP_UNKNOWN_FIELD)
    result = selfheal(tmp_path, "--db", str(db), command)
    assert_one_line_error(result)
    assert "unexpected" not in result.err and "position 2: IntentArchived" in result.err, result.err
    assert result.seconds < 30


def test_a_deep_old_incident_stops_the_runner_with_its_position(tmp_path):
    db = tmp_path / "log.db"
    _log(db, "IncidentCaptured", 1, DEEP_OLD_INCIDENT)
    result = selfheal(tmp_path, "--db", str(db), "run")
    assert_one_line_error(result)
    assert "unexpected" not in result.err and "position 2: IncidentCaptured v1" in result.err, result.err


@pytest.mark.parametrize("type_name, version, body", [("IntentArchived", 1, DEEP_UNKNOWN_FIELD),
                                                      ("IncidentCaptured", 1, DEEP_OLD_INCIDENT)])
def test_verify_reports_the_row_and_events_lists_it(tmp_path, type_name, version, body):
    db = tmp_path / "log.db"
    _log(db, type_name, version, body)
    result = selfheal(tmp_path, "--db", str(db), "verify")
    assert_one_line_error(result)
    assert "verify failed at position 2:" in result.err and "does not decode" in result.err, result.err
    listed = selfheal(tmp_path, "--db", str(db), "events")
    assert listed.rc == 0, listed.err
    assert [line.split()[0] for line in listed.out.splitlines()] == ["1", "2", "3"]
