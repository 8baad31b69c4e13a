"""A rebuild is one pass over the log that decodes only what a projection reads, and its read
models keep one copy of each repeated value; none of that may change an answer."""
from __future__ import annotations

import msgspec
import pytest

from selfheal import projections
from selfheal.eventstore import Pending, UnknownEventType, open_store
from selfheal.eventstore.recorder import NewEvent
from selfheal.projections.base import Shared, View
from selfheal.schemas.events import RunStarted
from selfheal.schemas.serving import ServingConfig
from tests.conftest import T0


def encoded(states: dict) -> dict:
    return {name: msgspec.json.encode(state) for name, state in states.items()}


def test_one_pass_equals_every_projection_folded_over_every_typed_event(healed_log):
    with open_store(healed_log) as store:
        rebuilt = projections.rebuild(store)
        folded = {p.name: p.fold(p.initial(), store.read()) for p in projections.registered()}
        assert rebuilt["position"] == store.last_position()
    assert encoded(rebuilt["projections"]) == encoded(folded)
    assert rebuilt["projections"]["event_counts"].total == rebuilt["position"]


def test_as_of_every_position_equals_a_fold_of_that_prefix(healed_log):
    with open_store(healed_log) as store:
        events = list(store.read())
        for cut in (0, 1, len(events) // 2, len(events) - 1):
            as_of = projections.rebuild(store, as_of=cut)
            prefix = {p.name: p.fold(p.initial(), events[:cut]) for p in projections.registered()}
            assert as_of["position"] == cut
            assert encoded(as_of["projections"]) == encoded(prefix), f"as of {cut}"


def test_bodies_no_projection_reads_are_neither_fetched_nor_decoded(healed_log, monkeypatch):
    with open_store(healed_log) as store:
        view = View(store, projections.registered())
        read = store.recorder.pages
        seen: list[tuple] = []
        monkeypatch.setattr(store.recorder, "pages", lambda *a, **kw: (seen.extend(p) or p for p in read(*a, **kw)))
        view.catch_up()
        wanted = set().union(*(p.types for p in view.projections.values() if p.body))
        assert {row[-1] is None for row in seen if row[-3] not in wanted} == {True}
        assert {row[-1] is None for row in seen if row[-3] in wanted} == {False}
        assert {"IncidentCaptured", "ObservationMade"} <= {row[-3] for row in seen} - wanted


@pytest.mark.parametrize("kind, version, error", [
    ("FromTheFuture", 1, "position 1: unknown event type 'FromTheFuture'"),
    ("IncidentUnmatched", 9, "position 1: IncidentUnmatched v9 is newer"),
])
def test_a_row_this_build_cannot_read_is_refused_even_where_no_body_is_read(tmp_path, kind, version, error):
    # IncidentUnmatched is read by event_counts alone, from its envelope
    with open_store(tmp_path / "log.db", create=True) as store:
        store.recorder.append("x", [NewEvent(event_id="a", type=kind, schema_version=version,
                                             occurred_at="2026-01-01T00:00:00.000000Z", data="{}")])
        with pytest.raises(UnknownEventType, match=error):
            projections.rebuild(store)


def test_a_view_caught_up_event_by_event_equals_one_caught_up_at_once(healed_log):
    # as a runner's view is: caught up before each handling, a few events at a time
    with open_store(healed_log) as store:
        stepped = View(store, projections.registered())
        for position in range(1, store.last_position() + 1):
            stepped.catch_up(until=position)
            assert stepped.position == position
        assert stepped.position == store.last_position()
        assert encoded(stepped.states) == encoded(View(store, projections.registered()).catch_up().states)


def test_repeated_values_are_kept_once(tmp_path):
    with open_store(tmp_path / "log.db", create=True) as store:
        for i in range(3):  # decoded apart: three equal configs, three equal names
            store.append(f"run-{i}", [Pending(event=RunStarted(run_id=f"r{i}", intent_id=f"i{i}", deployment="chat",
                                                               mode="dev", current=ServingConfig(), environment="l40s"),
                                              event_id=f"e{i}", occurred_at=T0)])
        runs = projections.rebuild(store)["projections"]["runs"].by_id.values()
    assert len({id(r.current) for r in runs}) == len({id(r.deployment) for r in runs}) == 1
    assert len({id(r.run_id) for r in runs}) == 3


def test_shared_values_are_equal_and_of_the_same_kind():
    shared = Shared()
    one, true, one_point_o = {"x": 1}, {"x": True}, {"x": 1.0}
    assert shared.json(one) is one and shared.json(true) is true and shared.json(one_point_o) is one_point_o
    assert shared.json({"x": 1}) is one and shared.json({"x": True}) is true
    word = "".join(["dep", "loyment"])
    assert shared[word] is word and shared["deployment"] is word
