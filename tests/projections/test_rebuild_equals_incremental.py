"""For random logs, a projection rebuilt from scratch equals one caught up in random steps,
and evaluating as of a position equals rebuilding a log cut at that position."""
from __future__ import annotations

from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from selfheal import projections
from selfheal.eventstore import Pending, memory_store
from selfheal.projections.base import catch_up, rebuild
from selfheal.schemas.events import IntentArchived, IntentDeduplicated, RunRefused
from tests.conftest import T0


def make(kind: int, i: int):
    if kind == 0:
        return IntentArchived(intent_id=str(i), deployment=f"d{i % 3}", outcome="promoted")
    if kind == 1:
        return IntentDeduplicated(intent_id=str(i), incident_id="x", fingerprint="f", window_s=60)
    return RunRefused(run_id=str(i), intent_id="x", deployment="d", reason="cooldown")


events = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 5)), max_size=60)
cuts = st.lists(st.integers(0, 60), max_size=6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=events, cuts=cuts)
def test_rebuild_equals_incremental(events, cuts):
    store = memory_store(clock=lambda: T0)
    for i, (kind, stream) in enumerate(events):
        store.append(f"s{stream}", [Pending(event=make(kind, i), event_id=f"e{i}",
                                            occurred_at=T0 + timedelta(seconds=i))])
    for projection in projections.registered():
        full, _ = rebuild(store, projection)
        state, position = projection.initial(), 0
        for cut in sorted(cuts) + [len(events)]:
            state, position = catch_up(store, projection, state, position, until=max(cut, position))
        assert state == full
        for cut in cuts:
            as_of, _ = rebuild(store, projection, as_of=cut)
            prefix = memory_store(clock=lambda: T0)
            for row in list(store.read())[:cut]:
                prefix.append(row.stream, [Pending(event=row.event, event_id=row.event_id, occurred_at=row.occurred)])
            assert as_of == rebuild(prefix, projection)[0]
