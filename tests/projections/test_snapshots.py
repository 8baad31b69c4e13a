"""View snapshots are a cache: a view restored from one and caught up equals a fold from
scratch, and a snapshot that does not belong to this log or this code is never used."""
from __future__ import annotations

import sqlite3

import msgspec
import pytest

from selfheal import projections
from selfheal.eventstore import open_store
from selfheal.handlers import loop
from selfheal.projections import snapshots
from selfheal.projections.base import View
from tests.loop.conftest import Harness, settings_for


def encoded(view: View) -> dict:
    return {name: msgspec.json.encode(state) for name, state in view.states.items()}


def _sql(statement: str, *params):
    def run(path):
        conn = sqlite3.connect(path)
        with conn:
            conn.execute(statement, params)
        conn.close()
    return run


def fresh(store) -> View:
    return View(store, projections.registered())


def test_restored_and_caught_up_equals_a_fold_from_scratch_at_every_cut(healed_log, tmp_path):
    with open_store(healed_log) as source:
        last = source.last_position()
    assert last > 60
    full = encoded(fresh(open_store(healed_log)).catch_up())
    for cut in sorted({1, 2, last // 3, last // 2, last - 1, last}):
        path = tmp_path / f"cut{cut}.db"
        path.write_bytes(healed_log.read_bytes())
        with open_store(path) as store:
            assert snapshots.save(fresh(store).catch_up(until=cut), every=0)
            restored = fresh(store)
            assert snapshots.restore(restored) == cut
            assert encoded(restored.catch_up()) == full, f"cut at {cut}"


def test_the_loop_writes_a_snapshot_when_due_and_the_next_run_starts_from_it(tmp_path, monkeypatch):
    monkeypatch.setattr(snapshots.save, "__defaults__", (10,))
    h = Harness(tmp_path / "log.db", settings_for())
    h.incident()
    first = h.store.last_position()
    assert first >= 10
    driver = loop.runner(h.store, h.settings, h.edges)
    assert driver.view.position == first  # the runner's view starts at the snapshot
    h.incident()  # an identical incident: deduplicated with the view restored from the snapshot
    assert encoded(projections.view_as_of(h.store)) == encoded(fresh(h.store).catch_up())
    assert [r.type for r in h.store.read(types=["IntentDeduplicated"])] == ["IntentDeduplicated"]


def _snapshot_then(tamper, healed_log, tmp_path):
    path = tmp_path / "log.db"
    path.write_bytes(healed_log.read_bytes())
    with open_store(path) as store:
        assert snapshots.save(fresh(store).catch_up(until=store.last_position() // 2), every=0)
    tamper(path)
    with open_store(path) as store:
        view = fresh(store)
        return snapshots.restore(view), encoded(view.catch_up()), encoded(fresh(store).catch_up())


@pytest.mark.parametrize("tamper", [
    _sql("UPDATE view_snapshots SET hash = 'sha256:another-log'"),    # a snapshot of another log
    _sql("UPDATE view_snapshots SET key = 'older-fold-code'"),        # written by other fold code
    _sql("UPDATE view_snapshots SET data = x'c1c1c1'"),               # unreadable
    _sql("UPDATE view_snapshots SET data = ?", msgspec.msgpack.encode({"runs": [1, 2]})),  # wrong shape
    _sql("UPDATE view_snapshots SET position = position + 100000"),  # beyond the log's end
], ids=["other-log", "other-code", "garbage", "wrong-shape", "beyond-the-end"])
def test_a_snapshot_that_does_not_belong_is_ignored(tamper, healed_log, tmp_path):
    used, restored, scratch = _snapshot_then(tamper, healed_log, tmp_path)
    assert used == 0
    assert restored == scratch


def test_a_changed_fold_retires_the_snapshot(healed_log, tmp_path, monkeypatch):
    path = tmp_path / "log.db"
    path.write_bytes(healed_log.read_bytes())
    with open_store(path) as store:
        assert snapshots.save(fresh(store).catch_up(), every=0)
        monkeypatch.setattr(snapshots, "snapshot_key", lambda view: "the-fold-code-changed")
        assert snapshots.restore(fresh(store)) == 0


def test_a_snapshot_that_cannot_be_written_is_skipped_and_reads_still_work(healed_log, tmp_path):
    path = tmp_path / "log.db"
    path.write_bytes(healed_log.read_bytes())
    with open_store(path) as store:
        store.recorder.connection.execute("PRAGMA query_only = ON")  # every write now fails
        assert snapshots.save(fresh(store).catch_up(), every=0) is False
        assert encoded(projections.view_as_of(store)) == encoded(fresh(store).catch_up())
