"""Issue 13, round two, item 5: one undecodable row must not wedge the log.

A body nested 100,000 deep passed `verify`, and then every read that decoded it died with
`unexpected RecursionError`, naming no position. Every decode path (the typed read, a fold's
`Decoders`, `typed(row)`, the upcast of an old version) must give one CorruptEvent that names
the position, in bounded time; `verify` reports the row; `events` still lists the log.
"""
from __future__ import annotations

import time

import pytest

from selfheal.eventstore import audit, codec
from selfheal.eventstore.errors import CorruptEvent, StoreError
from selfheal.eventstore.recorder import NewEvent
from selfheal.eventstore.store import READ_COLUMNS, Decoders, open_store, typed
from tests.conftest import archived

DEEP = 100_000
ARCHIVED = '"intent_id":"i","deployment":"chat","outcome":"promoted"'

#: (type, schema version, body): bodies that the hash chain accepts but no reader can decode
HOSTILE_BODIES = {
    # an old version is decoded untyped, then upcast: the decoder recursed until Python gave up
    "old version, arrays 100k deep": ("IncidentCaptured", 1, "[" * DEEP + "]" * DEEP),
    "old version, objects 100k deep": ("IncidentCaptured", 1, '{"a":' * DEEP + "1" + "}" * DEEP),
    # the typed decoder skips a field it does not know, and skipping recursed the same way
    "current version, unknown field 100k deep": ("IntentArchived", 1, '{"x":' + "[" * DEEP + "]" * DEEP
                                                 + "," + ARCHIVED + "}"),
    # an upcaster given an array where it expects an object
    "old version, an array body": ("IncidentCaptured", 1, "[1, 2]"),
}


def _log(tmp_path, type_name: str, version: int, body: str):
    """A log whose position 2 holds `body` (appended under the store's feet, as a hand-typed
    INSERT with a correct hash would be), between two good events."""
    store = open_store(tmp_path / "log.db", create=True)
    store.append("in", [archived(1)])
    store.recorder.append("bad", [NewEvent(event_id="bad", type=type_name, schema_version=version,
                                           occurred_at="2026-11-24T06:00:00.000000Z", data=body)])
    store.append("in", [archived(3)])
    return store


@pytest.fixture(params=list(HOSTILE_BODIES))
def bad_log(request, tmp_path):
    store = _log(tmp_path, *HOSTILE_BODIES[request.param])
    yield store
    store.close()


def test_every_decode_path_names_the_position(bad_log):
    started = time.monotonic()
    with pytest.raises(CorruptEvent, match=r"^position 2: "):
        list(bad_log.read())
    row = bad_log.recorder.get("bad")
    with pytest.raises(CorruptEvent, match=r"^position 2: "):
        typed(row)
    with pytest.raises(CorruptEvent, match=r"^position 2: "):
        bad_log.typed(row)
    decoders = Decoders()
    [page] = bad_log.rows()
    with pytest.raises(CorruptEvent, match=r"^position 2: "):
        [decoders.body(r) for r in page]
    assert [r[READ_COLUMNS.index("position")] for r in page] == [1, 2, 3]  # the row itself reads
    assert time.monotonic() - started < 10


def test_verify_reports_a_body_that_does_not_decode(bad_log):
    assert bad_log.recorder.verify().ok  # the chain itself is intact: the row is authentic
    report = audit.verify(bad_log)
    assert not report.ok
    assert report.first_break.position == 2
    assert "does not decode" in report.first_break.problem
    assert report.events == 3


def test_events_still_lists_the_row_as_stored(bad_log):
    rows = list(audit.events(bad_log))
    assert [r.position for r in rows] == [1, 2, 3]
    assert rows[1].data == bad_log.recorder.get("bad").data


def test_a_body_over_the_size_limit_is_refused_where_it_would_be_decoded_untyped(tmp_path):
    # an old version's body is decoded into Python objects before it is upcast: the size is bounded
    body = '{"incident_id":"i","deployment":"d","text":"' + "x" * (getattr(codec, "MAX_BODY_BYTES", 16 << 20) + 1) + '"}'
    with _log(tmp_path, "IncidentCaptured", 1, body) as store:
        with pytest.raises(CorruptEvent, match=r"^position 2: .*bytes.*limit"):
            list(store.read())


def test_a_nesting_within_the_depth_limit_still_upcasts():
    # depth is counted outside strings: brackets inside text are text
    body = ('{"incident_id":"i","deployment":"d","text":"' + "[" * 500 + '","context":{"k":"v"}}')
    event = codec.decode("IncidentCaptured", 1, body)
    assert event.raw_text == "[" * 500 and event.context == {"k": "v"}


def test_a_body_too_large_to_read_back_is_never_recorded(tmp_path):
    # what is recorded must stay readable on every path: the writer keeps the reader's limit
    from selfheal.eventstore.store import Pending
    from selfheal.schemas.events import IntentArchived
    from tests.conftest import T0

    huge = Pending(event=IntentArchived(intent_id="x" * (getattr(codec, "MAX_BODY_BYTES", 16 << 20) + 1), deployment="chat",
                                        outcome="promoted"), event_id="huge", occurred_at=T0)
    with open_store(tmp_path / "log.db", create=True) as store:
        with pytest.raises(StoreError, match="IntentArchived.*limit"):
            store.append("in", [huge])
        assert store.last_position() == 0
