from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import msgspec
import pytest

from selfheal.eventstore import CorruptEvent, Pending, UnknownEventType, memory_store, open_store
from selfheal.eventstore.recorder import NewEvent
from selfheal.schemas.events import EVENT_TYPES, IncidentCaptured, IncidentSource, IntentArchived
from tests.conftest import T0, archived


@pytest.fixture(params=["sqlite", "memory"])
def store(request, tmp_path):
    s = open_store(tmp_path / "log.db", create=True) if request.param == "sqlite" else memory_store()
    yield s
    s.close()


def test_typed_round_trip(store):
    incident = IncidentCaptured(incident_id="i1", deployment="chat", source=IncidentSource(kind="file", path="/var/log/vllm.log"),
                                raw_text="ValueError: boom", fingerprint="sha256:abc")
    store.append("incident-i1", [Pending(event=incident, event_id="e1", occurred_at=T0, correlation_id="i1")])
    (got,) = list(store.read())
    assert got.event == incident
    assert got.type == "IncidentCaptured" and got.correlation_id == "i1"
    assert got.occurred == T0


def test_stored_v1_incident_reads_as_v2(store):
    v1 = {"type": "IncidentCaptured", "incident_id": "old", "deployment": "chat", "source": "journald",
          "text": "No available memory for the cache blocks."}
    store.recorder.append("incident-old", [NewEvent(event_id="e-old", type="IncidentCaptured", schema_version=1,
                                                    occurred_at="2026-01-01T00:00:00.000000Z", data=json.dumps(v1))])
    (got,) = list(store.read())
    assert IncidentCaptured.SCHEMA_VERSION == 2
    assert got.event == IncidentCaptured(
        incident_id="old", deployment="chat", source=IncidentSource(kind="journald"),
        raw_text=v1["text"], fingerprint="sha256:" + hashlib.sha256(v1["text"].encode()).hexdigest()[:16])


def test_unknown_type_and_newer_version_are_named(store):
    store.recorder.append("x", [NewEvent(event_id="a", type="FromTheFuture", schema_version=1,
                                         occurred_at="2026-01-01T00:00:00.000000Z", data="{}")])
    with pytest.raises(UnknownEventType, match="position 1: unknown event type 'FromTheFuture'"):
        list(store.read())


def test_newer_schema_version_is_refused(store):
    store.recorder.append("x", [NewEvent(event_id="a", type="IntentArchived", schema_version=9,
                                         occurred_at="2026-01-01T00:00:00.000000Z", data="{}")])
    with pytest.raises(UnknownEventType, match="IntentArchived v9 is newer"):
        list(store.read())


def test_corrupt_body_is_named(store):
    store.recorder.append("x", [NewEvent(event_id="a", type="IntentArchived", schema_version=1,
                                         occurred_at="2026-01-01T00:00:00.000000Z", data='{"intent_id": 5}')])
    with pytest.raises(CorruptEvent, match="position 1: IntentArchived v1 does not decode"):
        list(store.read())


def test_follow_derives_envelope_from_its_cause(store):
    store.append("a", [archived(1, event_id="cause")])
    (cause,) = list(store.read())
    effect = cause.follow(IntentArchived(intent_id="2", deployment="chat", outcome="escalated"), "h")
    assert effect.causation_id == "cause" and effect.correlation_id == "cause"
    assert effect.occurred_at == T0
    assert effect.event_id == cause.follow(effect.event, "h").event_id != cause.follow(effect.event, "other").event_id


def test_as_of_time_and_position(store):
    for i in range(3):
        store.append("a", [archived(i, when=T0 + timedelta(minutes=i))])
    assert store.as_of(2) == 2 and store.as_of(99) == 3
    (first, second, third) = list(store.read())
    # a time means the log up to the last event recorded, or that occurred, by then: the time a
    # line shows is when its event occurred, and --as-of that time stands right after it
    assert store.as_of(second.occurred_at) == 2
    assert store.as_of(T0 - timedelta(minutes=1)) == 0
    assert store.as_of(second.recorded_at) == 3  # all three occurred (T0 + 0..2 min) before it was recorded


def test_every_event_type_is_frozen_and_versioned():
    for name, cls in EVENT_TYPES.items():
        assert cls.__struct_config__.frozen, name
        assert cls.__struct_config__.tag == name
        assert isinstance(cls.SCHEMA_VERSION, int) and cls.SCHEMA_VERSION >= 1


def test_naive_times_are_refused():
    with pytest.raises(ValueError, match="naive"):
        Pending(event=IntentArchived(intent_id="1", deployment="d", outcome="promoted"), event_id="x",
                occurred_at=T0.replace(tzinfo=None) + timedelta(0)).encoded()
