"""Issue 13, round two, item 4: a checkpoint moved back must not repeat an effect.

Checkpoints live outside the hash chain (`handler_checkpoints`). Setting one handler's back to
0 made the next `run` execute production's restart command again, without recording it (the
derived id of its VerificationFinished was absorbed as a retry); emptying the table made every
`run` fail (the gate decided again on a later view, and its batch mixed a stored id with a new
one). A handler's answer to an event is now found in the log itself (an event it caused, of a
type it answers with), and a handler whose answer is there does not act or decide again,
whatever its checkpoint says. A fact an activity records while it acts (CanaryLaunched) is not
an answer: a canary whose run was cut short is still run again.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import selfheal
from selfheal.eventstore import memory_store
from selfheal.eventstore.recorder import CheckpointAdvance
from selfheal.handlers import flow
from selfheal.handlers.runtime import Activity, Runner
from selfheal.schemas.events import IntentArchived, IntentDeduplicated
from tests.conftest import archived
from tests.reliability.crash_world import World

# -- the runtime on its own -------------------------------------------------------------------


class Effect(Activity):
    """Counts its effects; records a fact as it starts, then its result (unless told to die)."""

    name = "effect"
    port = "backend"
    subscribes_to = (IntentArchived,)
    emits = (IntentArchived, IntentDeduplicated)
    facts = (IntentArchived,)

    def __init__(self, die: bool = False):
        self.performed, self.die = 0, die

    def perform(self, event, view, progress):
        if event.stream != "in":
            return ()
        self.performed += 1
        started = IntentArchived(intent_id=f"started-{self.performed}", deployment="d", outcome="superseded")
        progress.record("facts", event.follow(started, f"started-{self.performed}"))
        if self.die:
            raise RuntimeError("the effect was cut short")
        done = IntentDeduplicated(intent_id="x", incident_id=event.event_id, fingerprint="f", window_s=0)
        return [("out", event.follow(done, "done"))]


def move_back(store, handler: str, to: int = 0) -> None:
    store.recorder.append_many([], [CheckpointAdvance(handler, store.recorder.checkpoint(handler), to)])


def test_an_activity_whose_result_is_recorded_does_not_act_again_after_its_checkpoint_moved_back():
    store = memory_store()
    store.append("in", [archived(i) for i in range(3)])
    effect = Effect()
    Runner(store, [effect]).run_until_idle()
    assert effect.performed == 3
    move_back(store, "effect")
    before = store.last_position()
    Runner(store, [effect]).run_until_idle()
    assert effect.performed == 3, "an effect whose result is in the log was performed again"
    assert store.last_position() == before
    assert store.recorder.checkpoint("effect") == before


def test_an_activity_that_recorded_only_facts_is_performed_again():
    store = memory_store()
    store.append("in", [archived(0)])
    with pytest.raises(RuntimeError):
        Runner(store, [Effect(die=True)]).run_until_idle()
    effect = Effect()
    Runner(store, [effect]).run_until_idle()
    assert effect.performed == 1
    assert [r.type for r in store.read_stream("out")] == ["IntentDeduplicated"]


def test_no_two_handlers_of_the_loop_answer_one_event_with_the_same_type():
    """What the guard rests on: an event caused by E of a type H answers with is H's answer to
    E, so no two handlers that react to one event type may record a common type."""
    for i, a in enumerate(flow.LOOP):
        for b in flow.LOOP[i + 1:]:
            shared = set(a.subscribes_to) & set(b.subscribes_to)
            assert not (shared and set(a.emits) & set(b.emits)), (a.name, b.name)


# -- the whole loop, effects counted from outside ---------------------------------------------


@pytest.fixture(scope="module")
def healed(tmp_path_factory):
    """A world whose incident was healed: two canaries (the seed fails; its log calibrates the second), one commit, one restart."""
    world = World(tmp_path_factory.mktemp("healed")).create()
    world.observe()
    done = world.selfheal("run")
    assert done.returncode == 0, done.stderr
    effects = world.effects()
    assert (effects["canary_servers"], effects["reloads"], effects["config_writes"]) == (2, 1, 1)
    return world


def sql(db: Path, statement: str, *params) -> None:
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(statement, params)
    conn.close()


def count(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        conn.close()


@pytest.fixture
def world(healed):
    """The healed world; every checkpoint back at the end of the log afterwards, whatever the test did."""
    yield healed
    sql(healed.db, "DELETE FROM handler_checkpoints")
    for cls in flow.LOOP:
        sql(healed.db, "INSERT INTO handler_checkpoints (handler, position, updated_at) VALUES (?, ?, '')",
            cls.name, count(healed.db))


@pytest.mark.parametrize("handler", [cls.name for cls in flow.LOOP])
def test_a_checkpoint_moved_back_repeats_no_effect_and_records_nothing(world, handler):
    before, events = world.effects(), count(world.db)
    sql(world.db, "UPDATE handler_checkpoints SET position = 0 WHERE handler = ?", handler)
    selfheal.run(db=world.db, config=world.toml)
    assert world.effects() == before
    assert count(world.db) == events


def test_an_emptied_checkpoints_table_does_not_make_run_fail(world):
    before, events = world.effects(), count(world.db)
    sql(world.db, "DELETE FROM handler_checkpoints")
    done = world.selfheal("run")
    assert done.returncode == 0, done.stderr
    assert world.effects() == before
    assert count(world.db) == events
    conn = sqlite3.connect(world.db)
    checkpoints = dict(conn.execute("SELECT handler, position FROM handler_checkpoints"))
    conn.close()
    assert checkpoints == {cls.name: events for cls in flow.LOOP}
