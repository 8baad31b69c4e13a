"""Sealed fields: an incident's text is stored encrypted under a key of its own, kept beside
the log; `forget` destroys the key, the text becomes unreadable, and the chain still verifies.
"""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from selfheal.eventstore import open_store, sealing
from selfheal.eventstore.audit import events
from selfheal.eventstore.store import Pending
from selfheal.schemas.events import IncidentCaptured, IncidentSource

T0 = datetime(2026, 12, 5, 12, 0, tzinfo=timezone.utc)
TEXT = "ERROR: CUDA out of memory. Tried to allocate 2.00 GiB\ncustomer: zebra-umbrella-4471 (no pattern lists it)\n"


def incident(n: int = 1, text: str = TEXT) -> Pending:
    e = IncidentCaptured(incident_id=f"inc-{n}", deployment="d", source=IncidentSource(kind="file"),
                         raw_text=text, fingerprint="sha256:0")
    return Pending(event=e, event_id=f"inc-{n}", occurred_at=T0, correlation_id=f"inc-{n}")


def test_seal_and_unseal_round_trip():
    key = sealing.new_key()
    for text in ("", "a", TEXT, "ünïcödé \udc80 surrogate", "x" * 100_000):
        sealed = sealing.seal(text, key)
        assert sealed.startswith(sealing.PREFIX)
        # the text is not in the sealed form; a text of a few characters may turn up in random base64 by chance
        # ("a" did in 1 of 16 runs), so only a text long enough to mean something is looked for
        assert len(text) < 8 or text[:20] not in sealed[len(sealing.PREFIX):]
        assert sealing.unseal(sealed, key) == text
    assert sealing.unseal(sealing.seal(TEXT, key), None) == sealing.FORGOTTEN
    assert sealing.unseal("plain text from before sealing", None) == "plain text from before sealing"
    assert sealing.seal(TEXT, key) != sealing.seal(TEXT, sealing.new_key())


@pytest.fixture
def store(tmp_path):
    with open_store(tmp_path / "log.db", create=True) as s:
        yield s


def test_the_file_never_holds_the_text_and_reads_give_it_back(store, tmp_path):
    store.append("incident-inc-1", [incident()])
    assert store.get("inc-1").event.raw_text == TEXT
    assert [r.event.raw_text for r in store.read()] == [TEXT]
    assert list(store.read_stream("incident-inc-1"))[0].event.raw_text == TEXT
    assert b"zebra-umbrella" not in (tmp_path / "log.db").read_bytes() + _wal(tmp_path)
    # the audit rows (`selfheal events`, bundles) show it open
    assert "zebra-umbrella-4471" in list(events(store))[0].data


def _wal(tmp_path) -> bytes:
    wal = tmp_path / "log.db-wal"
    return wal.read_bytes() if wal.exists() else b""


def test_forget_makes_the_text_unreadable_and_the_log_still_verifies(store, tmp_path):
    store.append("incident-inc-1", [incident(1)])
    store.append("incident-inc-2", [incident(2, "another incident, kept")])
    key = store.recorder.event_key("inc-1")
    # as in a log in use for a while: the key's page has long reached the main file
    store.recorder.connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert key in (tmp_path / "log.db").read_bytes()
    position = store.forget(store.get("inc-1"), "ops", T0, "a key leaked")
    got = store.get("inc-1").event
    assert got.raw_text == sealing.FORGOTTEN and sealing.forgotten(got)
    assert store.get("inc-2").event.raw_text == "another incident, kept"
    record = [r for r in store.read() if r.position == position][0]
    assert record.event.incident_id == "inc-1" and record.event.by == "ops" and record.event.reason == "a key leaked"
    assert store.recorder.verify().ok
    assert sealing.FORGOTTEN in list(events(store, types=["IncidentCaptured"]))[0].data
    # the key's bytes are gone from the file and its WAL (secure_delete, then a truncating checkpoint)
    assert key not in (tmp_path / "log.db").read_bytes() + _wal(tmp_path)
