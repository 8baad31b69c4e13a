"""The recorder contract: every backend of the log must pass these tests.

A backend's test module subclasses `RecorderContract` and provides `make_recorder`.
"""
from __future__ import annotations

import msgspec
import pytest

from selfheal.eventstore.errors import CheckpointConflict, ConcurrencyError, DuplicateEventConflict
from selfheal.eventstore.recorder import COLUMNS, AppendRequest, CheckpointAdvance, EventFilter, NewEvent


def ev(n: int, *, event_id: str | None = None, type: str = "IntentArchived", correlation: str | None = None,
       occurred_at: str = "2026-11-24T06:00:00.000000Z") -> NewEvent:
    return NewEvent(event_id=event_id or f"id-{n}", type=type, schema_version=1, occurred_at=occurred_at,
                    data=f'{{"n":{n}}}', correlation_id=correlation, causation_id=None)


class RecorderContract:
    @pytest.fixture
    def recorder(self, tmp_path, clock):
        rec = self.make_recorder(tmp_path, clock)
        yield rec
        rec.close()

    def make_recorder(self, tmp_path, clock):  # pragma: no cover - overridden
        raise NotImplementedError

    def test_empty_log(self, recorder):
        assert recorder.last_position() == 0
        assert list(recorder.read()) == []
        assert recorder.stream_version("s") == 0
        assert recorder.verify().ok

    def test_append_assigns_global_positions_and_stream_versions(self, recorder):
        assert recorder.append("a", [ev(1), ev(2)]) == [1, 2]
        assert recorder.append("b", [ev(3)]) == [3]
        assert recorder.append("a", [ev(4)]) == [4]
        rows = list(recorder.read())
        assert [(r.position, r.stream, r.version) for r in rows] == [(1, "a", 1), (2, "a", 2), (3, "b", 1), (4, "a", 3)]
        assert recorder.stream_version("a") == 3
        assert [r.version for r in recorder.read_stream("a")] == [1, 2, 3]
        assert [r.version for r in recorder.read_stream("a", after_version=2)] == [3]

    def test_rows_keep_every_column(self, recorder):
        recorder.append("a", [NewEvent(event_id="e1", type="T", schema_version=3, occurred_at="2026-11-24T06:00:00.000000Z",
                                       data='{"x":1}', correlation_id="c", causation_id="k")])
        row = recorder.get("e1")
        assert (row.type, row.schema_version, row.data, row.correlation_id, row.causation_id) == ("T", 3, '{"x":1}', "c", "k")
        assert row.recorded_at.endswith("Z") and len(row.hash) == 64
        assert recorder.get("missing") is None

    def test_expected_version_is_checked(self, recorder):
        recorder.append("a", [ev(1)], expected_version=0)
        recorder.append("a", [ev(2)], expected_version=1)
        with pytest.raises(ConcurrencyError) as err:
            recorder.append("a", [ev(3)], expected_version=1)
        assert (err.value.stream, err.value.expected, err.value.actual) == ("a", 1, 2)
        assert "stream 'a'" in str(err.value) and "expected version 1" in str(err.value)
        assert recorder.last_position() == 2

    def test_batch_is_atomic(self, recorder):
        recorder.append("a", [ev(1)])
        with pytest.raises(ConcurrencyError):
            recorder.append_many([AppendRequest("b", [ev(2)]), AppendRequest("a", [ev(3)], expected_version=0)])
        assert recorder.last_position() == 1
        assert recorder.stream_version("b") == 0

    def test_retry_of_stored_batch_is_idempotent(self, recorder):
        first = recorder.append("a", [ev(1), ev(2)], expected_version=0)
        again = recorder.append("a", [ev(1), ev(2)], expected_version=0)
        assert first == again == [1, 2]
        assert recorder.last_position() == 2

    def test_mixed_stored_and_new_ids_are_refused(self, recorder):
        recorder.append("a", [ev(1)])
        with pytest.raises(DuplicateEventConflict):
            recorder.append("a", [ev(1), ev(2)])
        with pytest.raises(DuplicateEventConflict):
            recorder.append("a", [ev(5), ev(6, event_id="id-5")])
        assert recorder.last_position() == 1

    def test_read_after_types_and_until(self, recorder):
        recorder.append("a", [ev(i, type="X" if i % 2 else "Y") for i in range(1, 11)])
        assert [r.position for r in recorder.read(7)] == [8, 9, 10]
        assert [r.position for r in recorder.read(0, types=["Y"])] == [2, 4, 6, 8, 10]
        assert [r.position for r in recorder.read(2, until=5)] == [3, 4, 5]
        assert [r.position for r in recorder.read(0, page=3)] == list(range(1, 11))

    def test_pages_give_the_columns_asked_and_bodies_only_where_wanted(self, recorder):
        recorder.append("a", [ev(i, type="X" if i % 2 else "Y") for i in range(1, 8)])
        rows = [r for page in recorder.pages(("type", "position", "data"), 1, until=6, page=2) for r in page]
        assert rows == [(("X" if i % 2 else "Y"), i, f'{{"n":{i}}}') for i in range(2, 7)]
        assert [len(page) for page in recorder.pages(("position",), page=3)] == [3, 3, 1]
        masked = [r for page in recorder.pages(("position", "data"), bodies=["Y"]) for r in page]
        assert masked == [(i, f'{{"n":{i}}}' if i % 2 == 0 else None) for i in range(1, 8)]
        only_x = [r for page in recorder.pages(("position", "data"), types=["X"], bodies=[]) for r in page]
        assert only_x == [(1, None), (3, None), (5, None), (7, None)]
        full = [r for page in recorder.pages(COLUMNS) for r in page]
        assert full == [msgspec.structs.astuple(r) for r in recorder.read()]

    def test_query_filters(self, recorder):
        recorder.append("a", [ev(1, correlation="c1", occurred_at="2026-11-24T06:00:00.000000Z"),
                              ev(2, correlation="c2", occurred_at="2026-11-24T07:00:00.000000Z")])
        recorder.append("b", [ev(3, correlation="c1", type="Z", occurred_at="2026-11-24T08:00:00.000000Z")])
        q = lambda **kw: [r.position for r in recorder.query(EventFilter(**kw))]  # noqa: E731
        assert q(stream="a") == [1, 2]
        assert q(correlation_id="c1") == [1, 3]
        assert q(types=("Z",)) == [3]
        assert q(occurred_since="2026-11-24T07:00:00.000000Z") == [2, 3]
        assert q(occurred_until="2026-11-24T07:00:00.000000Z") == [1]
        assert q(after=1, until=2) == [2]
        assert [r.position for r in recorder.query(EventFilter(), limit=2)] == [1, 2]

    def test_checkpoint_moves_with_the_events_in_one_transaction(self, recorder):
        recorder.append("in", [ev(1), ev(2)])
        assert recorder.checkpoint("h") == 0
        recorder.append_many([AppendRequest("out", [ev(10)])], [CheckpointAdvance("h", 0, 1)])
        assert recorder.checkpoint("h") == 1
        with pytest.raises(CheckpointConflict) as err:
            recorder.append_many([AppendRequest("out", [ev(11)])], [CheckpointAdvance("h", 0, 2)])
        assert (err.value.expected, err.value.actual) == (0, 1)
        assert recorder.stream_version("out") == 1  # the conflicting output was not written
        assert recorder.checkpoints() == {"h": 1}

    def test_several_checkpoints_move_together_or_not_at_all(self, recorder):
        recorder.append("in", [ev(1), ev(2)])
        recorder.append_many([AppendRequest("out", [ev(10)])],
                             [CheckpointAdvance("a", 0, 2), CheckpointAdvance("b", 0, 1)])
        assert recorder.checkpoints() == {"a": 2, "b": 1}
        with pytest.raises(CheckpointConflict) as err:  # b is at 1, not 0: neither moves
            recorder.append_many([AppendRequest("out", [ev(11)])],
                                 [CheckpointAdvance("a", 2, 3), CheckpointAdvance("b", 0, 3)])
        assert (err.value.handler, err.value.expected, err.value.actual) == ("b", 0, 1)
        assert recorder.checkpoints() == {"a": 2, "b": 1}
        assert recorder.stream_version("out") == 1

    def test_position_at_a_time(self, recorder, clock):
        recorder.append("a", [ev(1)])
        recorder.append("a", [ev(2)])
        second = recorder.get("id-2").recorded_at
        assert recorder.position_at(second) == 2
        assert recorder.position_at("2000-01-01T00:00:00.000000Z") == 0

    def test_hash_chain_verifies(self, recorder):
        for i in range(1, 6):
            recorder.append("a", [ev(i)])
        report = recorder.verify()
        assert report.ok and report.events == 5 and report.head_position == 5
        assert report.head_hash == list(recorder.read())[-1].hash

    # -- keys beside the log (eventstore/sealing.py) ---------------------------------------------

    def test_an_events_key_is_kept_with_it_and_never_in_the_row(self, recorder):
        key = b"k" * 32
        recorder.append("a", [msgspec.structs.replace(ev(1), key=key), ev(2)])
        assert recorder.event_key("id-1") == key and recorder.event_key("id-2") is None
        row = list(recorder.read())[0]
        assert key.decode() not in msgspec.json.encode(row).decode()
        assert recorder.verify().ok

    def test_a_retry_keeps_the_first_key(self, recorder):
        recorder.append("a", [msgspec.structs.replace(ev(1), key=b"1" * 32)])
        recorder.append("a", [msgspec.structs.replace(ev(1), key=b"2" * 32)])  # the same event again
        assert recorder.event_key("id-1") == b"1" * 32

    def test_a_refused_append_leaves_no_key(self, recorder):
        recorder.append("a", [ev(1)])
        with pytest.raises(ConcurrencyError):
            recorder.append("a", [msgspec.structs.replace(ev(2), key=b"2" * 32)], expected_version=0)
        assert recorder.event_key("id-2") is None

    def test_forget_destroys_the_key_and_records_why_together(self, recorder):
        recorder.append("a", [msgspec.structs.replace(ev(1), key=b"k" * 32)])
        assert recorder.forget("id-1", AppendRequest("a", [ev(2)])) == [2]
        assert recorder.event_key("id-1") is None
        assert [r.event_id for r in recorder.read()] == ["id-1", "id-2"]
        assert recorder.verify().ok  # the chain never held the key

    def test_a_forget_whose_record_is_refused_forgets_nothing(self, recorder):
        recorder.append("a", [msgspec.structs.replace(ev(1), key=b"k" * 32)])
        with pytest.raises(ConcurrencyError):
            recorder.forget("id-1", AppendRequest("a", [ev(2)], expected_version=0))
        assert recorder.event_key("id-1") == b"k" * 32

    def test_a_secret_is_made_once_and_kept(self, recorder):
        first = recorder.secret("redaction")
        assert len(first) == 32 and recorder.secret("redaction") == first
        assert recorder.secret("other") != first


class SharedLogContract:
    """What only a log shared by several processes shows: a backend's test module subclasses
    this too and provides `make_spec` (what `open_store` opens in another process) and
    `raw(spec, sql)` (a statement run behind selfheal's back, as a person with a client would)."""

    WRITERS, PER_WRITER = 4, 150
    #: statements that must be refused by the database itself
    REFUSED = ("UPDATE events SET data = '{}'", "DELETE FROM events")

    def make_spec(self, tmp_path) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def raw(self, spec: str, sql: str) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def test_writer_processes_and_a_tailing_reader_lose_and_skip_nothing(self, tmp_path):
        import os
        import subprocess
        import sys
        from pathlib import Path

        from selfheal.eventstore.store import open_store

        spec = self.make_spec(tmp_path)
        root = Path(__file__).resolve().parents[2]
        env = dict(os.environ, PYTHONPATH=str(root))
        procs = [subprocess.Popen([sys.executable, "-m", "tests.eventstore.shared_procs", "append", spec, str(n),
                                   str(self.PER_WRITER)], cwd=root, env=env, stderr=subprocess.PIPE, text=True)
                 for n in range(self.WRITERS)]
        seen, total = [], self.WRITERS * self.PER_WRITER
        with open_store(spec) as store:
            # tail the log while it grows: every page must continue exactly where the last ended
            while len(seen) < total and any(p.poll() is None for p in procs) or len(seen) < store.last_position():
                for row in store.recorder.read(seen[-1] if seen else 0):
                    assert row.position == len(seen) + 1, f"the reader skipped from {len(seen)} to {row.position}"
                    seen.append(row.position)
            for p in procs:
                assert p.wait(timeout=120) == 0, p.stderr.read()[-2000:]
            assert len(seen) == store.last_position() == total
            for n in range(self.WRITERS):
                rows = list(store.recorder.read_stream(f"w{n}"))
                assert [r.version for r in rows] == list(range(1, self.PER_WRITER + 1))
                assert [r.event_id for r in rows] == [f"w{n}-{i}" for i in range(self.PER_WRITER)]
            recorded = [r.recorded_at for r in store.recorder.read()]
            assert recorded == sorted(recorded)  # time order is position order, across processes
            assert store.recorder.verify().ok

    def test_the_database_refuses_changes_to_events(self, tmp_path):
        from selfheal.eventstore.store import open_store

        spec = self.make_spec(tmp_path)
        with open_store(spec) as store:
            store.recorder.append("a", [ev(1), ev(2)])
        for sql in self.REFUSED:
            with pytest.raises(Exception, match="append-only"):
                self.raw(spec, sql)
        with open_store(spec) as store:
            assert store.recorder.last_position() == 2 and store.recorder.verify().ok

    def test_an_edit_behind_the_triggers_is_found_by_verify(self, tmp_path):
        from selfheal.eventstore.store import open_store

        spec = self.make_spec(tmp_path)
        with open_store(spec) as store:
            store.recorder.append("a", [ev(i) for i in range(1, 6)])
        self.tamper(spec, 3)
        with open_store(spec) as store:
            report = store.recorder.verify()
        assert not report.ok and report.first_break.position == 3

    def tamper(self, spec: str, position: int) -> None:  # pragma: no cover - overridden
        raise NotImplementedError
