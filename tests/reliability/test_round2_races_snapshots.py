"""Issue 13, round two, item 3: a forged snapshot must not steer a decision.

A snapshot row that keeps the right key and chain hash but carries other states (here: an
emptied rate-limit state) passed every check a snapshot had, so the next incident's gate read
the forged budget and started a run the clean log refused; `state` and `state --as-of` then
disagreed while `verify` said ok. A snapshot now carries a MAC under the log's own secret
(`recorder.secret("snapshots")`), and one that fails it is ignored: the view folds from scratch.
"""
from __future__ import annotations

import sqlite3
from datetime import timedelta

import msgspec
import pytest

from selfheal import projections
from selfheal.eventstore import open_store
from selfheal.handlers import loop
from selfheal.projections import snapshots
from selfheal.projections.base import View
from selfheal.projections.rate_limit import RateLimitProjection
from tests.conftest import T0, StepClock
from tests.loop.conftest import Harness, settings_for


def encoded(view: View) -> dict:
    return {name: msgspec.json.encode(state) for name, state in view.states.items()}


def forge(path, **states) -> None:
    """Replace states inside the stored snapshot, keeping its key, position and chain hash."""
    conn = sqlite3.connect(path)
    with conn:
        key, data = conn.execute("SELECT key, data FROM view_snapshots").fetchone()
        start = next(i for i in range(65) if _decodes(data[i:]))  # the states, after whatever precedes them
        parts = msgspec.msgpack.decode(data[start:], type=dict[str, msgspec.Raw])
        parts.update({name: msgspec.Raw(msgspec.msgpack.encode(state)) for name, state in states.items()})
        forged = data[:start] + msgspec.msgpack.encode(parts)
        conn.execute("UPDATE view_snapshots SET data = ? WHERE key = ?", (forged, key))
    conn.close()


def _decodes(data: bytes) -> bool:
    try:
        parts = msgspec.msgpack.decode(data, type=dict[str, msgspec.Raw])
    except msgspec.DecodeError:
        return False
    return "rate_limit" in parts


@pytest.fixture
def refused_log(tmp_path):
    """A log where one run was spent and a second incident, past the dedupe window but inside
    the 6 h cooldown, was refused by the gate; a valid snapshot at its end."""
    h = Harness(tmp_path / "log.db", settings_for(), clock=StepClock())
    h.incident()
    assert len(h.events("RunStarted")) == 1
    yield h
    h.store.close()


def test_a_forged_snapshot_does_not_change_the_gate_decision(refused_log):
    h = refused_log
    assert snapshots.save(projections.view_as_of(h.store), every=0)
    forge(h.store.recorder.path, rate_limit=RateLimitProjection().initial())
    h.clock = StepClock(T0 + timedelta(hours=2))  # past the dedupe window, inside the cooldown
    h.incident()
    assert len(h.events("RunStarted")) == 1, "the forged, empty rate-limit state let a second run start"
    assert len(h.events("RunRefused")) == 1
    now = projections.view_as_of(h.store)
    assert encoded(now) == encoded(projections.view_as_of(h.store, h.store.last_position()))
    assert encoded(now) == encoded(View(h.store, projections.registered()).catch_up())


def test_a_snapshot_that_fails_its_mac_is_never_restored(refused_log, tmp_path):
    h = refused_log
    assert snapshots.save(View(h.store, projections.registered()).catch_up(), every=0)
    assert snapshots.restore(View(h.store, projections.registered())) == h.store.last_position()
    forge(h.store.recorder.path, rate_limit=RateLimitProjection().initial())
    assert snapshots.restore(View(h.store, projections.registered())) == 0
    # and the next save is not held back by the forged row's position: it replaces it
    assert snapshots.save(View(h.store, projections.registered()).catch_up(), every=1)
    assert snapshots.restore(View(h.store, projections.registered())) == h.store.last_position()


def test_a_snapshot_signed_by_another_log_is_ignored(refused_log, tmp_path):
    """A snapshot row copied from another log with the same events (its chain hashes match)
    but its own secret does not verify here."""
    h = refused_log
    other = tmp_path / "other.db"
    assert snapshots.save(View(h.store, projections.registered()).catch_up(), every=0)
    source, conn = sqlite3.connect(h.store.recorder.path), sqlite3.connect(other)
    source.backup(conn)
    source.close()
    with conn:
        conn.execute("DELETE FROM keys WHERE name = 'secret:snapshots'")
        conn.execute("INSERT INTO keys (name, key) VALUES ('secret:snapshots', ?)", (b"\x01" * 32,))
    conn.close()
    with open_store(other) as copy:
        assert snapshots.restore(View(copy, projections.registered())) == 0
        assert loop.runner(copy, h.settings, h.edges).view.position == 0
