"""The envelope columns are defined once (StoredEvent's fields): the table, the rows the chain
hashes, the JSON rows and the typed reads all follow that one list."""
from __future__ import annotations

import json
import sqlite3

import msgspec
import pytest

from selfheal import projections
from selfheal.eventstore import StoreError, open_store
from selfheal.eventstore.audit import row_json
from selfheal.eventstore.hashing import GENESIS, chain_rows, row_hash
from selfheal.eventstore.recorder import COLUMNS, REQUIRED, NewEvent, StoredEvent
from selfheal.eventstore.store import READ_COLUMNS, Envelope, Recorded

EVENT = NewEvent(event_id="the-id", type="IntentArchived", schema_version=1, occurred_at="2026-11-24T06:00:00.000000Z",
                 data='{"intent_id":"1","deployment":"chat","outcome":"promoted"}', correlation_id="the-correlation",
                 causation_id="the-cause")


def test_the_chain_builds_rows_in_column_order():
    (row,) = chain_rows([EVENT], "the-stream", position=6, version=2, previous=GENESIS, recorded_at="the-time")
    named = dict(zip(COLUMNS, row, strict=True))
    columns = {k: v for k, v in msgspec.structs.asdict(EVENT).items() if k != "key"}  # the key is never a column
    assert named == {**columns, "position": 7, "stream": "the-stream", "version": 3,
                     "recorded_at": "the-time", "hash": row_hash(GENESIS, row)}
    # the hashed form is the stored format: the value the chain of every existing log was built with
    assert row_hash(GENESIS, row) == "17b7741a143d4d4163d2620ca74ad60b9832231762fb7d21e05fcad736f5fd32"


def test_the_table_is_the_stored_event(tmp_path):
    with open_store(tmp_path / "log.db", create=True) as store:
        info = store.recorder.connection.execute("PRAGMA table_info(events)").fetchall()
    assert tuple(column[1] for column in info) == COLUMNS == StoredEvent.__struct_fields__
    required = {column[1] for column in info if column[3] or column[5]}  # NOT NULL, or the primary key
    assert required == set(REQUIRED) == set(COLUMNS) - {"correlation_id", "causation_id"}


def test_json_rows_carry_every_column_in_order():
    row = StoredEvent(*(f"v{i}" for i in range(len(COLUMNS) - 2)), '{"a": [1, 2.0]}', "h")
    body = json.loads(row_json(row))
    assert tuple(body) == COLUMNS
    assert body["data"] == {"a": [1, 2.0]} and body["hash"] == "h"


def test_a_typed_read_is_a_recorded_and_its_envelope():
    assert READ_COLUMNS[:len(Recorded.__struct_fields__) - 1] == Recorded.__struct_fields__[:-1]
    assert READ_COLUMNS[:len(Envelope.__struct_fields__)] == Envelope.__struct_fields__
    column_types = {f.name: f.type for f in msgspec.structs.fields(StoredEvent)}
    assert {f.name: f.type for f in msgspec.structs.fields(Envelope)}.items() <= column_types.items()
    assert set(READ_COLUMNS) <= set(COLUMNS)


def damaged(path, column: str, position: int) -> None:
    """Empty a required column of one row behind selfheal's back, as a torn page does: the
    schema still says NOT NULL (so SQLite takes `column IS NULL` to be false without looking)."""
    conn = sqlite3.connect(path)
    (schema,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'events'").fetchone()
    conn.execute("PRAGMA writable_schema = ON")
    conn.execute("UPDATE sqlite_master SET sql = ? WHERE name = 'events'", (schema.replace("NOT NULL", ""),))
    conn.commit()
    conn.close()
    conn = sqlite3.connect(path)
    conn.execute("DROP TRIGGER events_refuse_update")
    conn.execute(f"UPDATE events SET {column} = NULL WHERE position = ?", (position,))
    conn.execute("PRAGMA writable_schema = ON")
    conn.execute("UPDATE sqlite_master SET sql = ? WHERE name = 'events'", (schema,))
    conn.commit()
    conn.close()


@pytest.fixture
def log(tmp_path):
    path = tmp_path / "log.db"
    with open_store(path, create=True) as store:
        for i in range(1, 6):
            store.recorder.append("s", [msgspec.structs.replace(EVENT, event_id=f"e{i}")])
    return path


READS = {
    "read": lambda store: list(store.recorder.read()),
    "read-paged": lambda store: list(store.recorder.read(types=["IntentArchived"], page=2)),
    "pages": lambda store: [r for page in store.recorder.pages(("position", "stream", "data"), bodies=[]) for r in page],
    "get": lambda store: store.recorder.get("e3"),
    "typed": lambda store: list(store.read()),
    "rebuild": lambda store: projections.rebuild(store),
}


@pytest.mark.parametrize("read", READS.values(), ids=READS.keys())
def test_a_row_with_an_empty_required_column_is_named(log, read):
    damaged(log, "stream", 3)
    with open_store(log) as store:
        with pytest.raises(StoreError, match="position 3: damaged row"):
            read(store)


@pytest.mark.parametrize("read", ["read", "typed", "rebuild"])
def test_an_empty_body_is_named_where_it_is_read(log, read):
    damaged(log, "data", 3)
    with open_store(log) as store:
        with pytest.raises(StoreError, match="position 3: damaged row"):
            READS[read](store)
        assert READS["pages"](store)[2] == (3, "s", None)  # no body asked for, none missed
