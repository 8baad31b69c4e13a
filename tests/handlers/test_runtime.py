from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from selfheal.eventstore import Pending, derived_id, memory_store, open_store
from selfheal.handlers.runtime import Activity, Reactor, Runner, UndeclaredEvent
from selfheal.projections.event_counts import EventCountsProjection
from selfheal.schemas.events import IntentArchived, IntentDeduplicated
from tests.conftest import archived
from tests.handlers.stamp_runner import Stamp

ROOT = Path(__file__).resolve().parents[2]


def seed(store, n: int) -> None:
    store.append("in", [archived(i) for i in range(n)])


def outputs(store) -> Counter:
    return Counter(r.causation_id for r in store.read_stream("out"))


def test_every_event_is_handled_once(tmp_path):
    store = open_store(tmp_path / "log.db", create=True)
    seed(store, 20)
    report = Runner(store, [Stamp(0)], page=3).run_until_idle()
    assert report.handled == 20 and report.emitted == 20
    assert set(outputs(store).values()) == {1} and len(outputs(store)) == 20
    assert store.recorder.checkpoint("stamp") == store.last_position()
    assert Runner(store, [Stamp(0)]).run_until_idle().handled == 0  # nothing left


class Counting(Reactor):
    """Sees the view at the moment it handles: the count includes earlier handlers' output."""

    name = "counting"
    subscribes_to = (IntentArchived,)
    emits = (IntentArchived,)

    def __init__(self):
        self.seen = []

    def react(self, event, view):
        self.seen.append((event.position, view["event_counts"].total))
        if event.stream != "in":
            return ()
        out = IntentArchived(intent_id="echo", deployment="d", outcome="superseded")
        return [("echo", event.follow(out, self.name))]


def test_view_includes_output_recorded_before_the_handling():
    store = memory_store()
    seed(store, 2)
    handler = Counting()
    Runner(store, [handler], [EventCountsProjection()]).run_until_idle()
    # position 1 sees 2 inputs; position 2 also sees the echo of 1 (position 3);
    # the echoes (3, 4) are handled too and see all four events
    assert handler.seen == [(1, 2), (2, 3), (3, 4), (4, 4)]


def test_handler_output_is_derived_from_its_cause():
    store = memory_store()
    seed(store, 1)
    Runner(store, [Counting()], [EventCountsProjection()]).run_until_idle()
    cause, echo = list(store.read())
    assert echo.causation_id == cause.event_id and echo.event_id == derived_id(cause.event_id, "counting")
    assert echo.occurred_at == cause.occurred_at


def test_two_runners_never_both_commit_one_event(tmp_path):
    path = tmp_path / "log.db"
    first = open_store(path, create=True)
    seed(first, 50)
    second = open_store(path)
    r1, r2 = Runner(first, [Stamp(0)], page=5), Runner(second, [Stamp(0)], page=5)
    # interleave: each runner takes a few events at a time, from the same stale start
    while r1.run_until_idle(max_events=3).position or r2.run_until_idle(max_events=3).position:
        if first.recorder.checkpoint("stamp") >= 50:
            break
    r1.run_until_idle()
    r2.run_until_idle()
    assert set(outputs(first).values()) == {1} and len(outputs(first)) == 50


def _start(path: Path, delay: float) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "tests.handlers.stamp_runner", str(path), str(delay)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_sigkill_mid_batch_never_handles_twice_or_skips(tmp_path):
    path = tmp_path / "log.db"
    store = open_store(path, create=True)
    seed(store, 120)
    rng = random.Random(7)
    kills = 0
    while store.recorder.checkpoint("stamp") < 120 and kills < 60:
        proc = _start(path, delay=0.002)
        time.sleep(rng.uniform(0.005, 0.06))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=30)
    final = _start(path, delay=0)
    assert final.wait(timeout=60) == 0
    counts = outputs(store)
    assert kills >= 5, "the runner finished before it could be killed often enough"
    assert len(counts) == 120 and set(counts.values()) == {1}, counts.most_common(3)
    assert store.recorder.checkpoint("stamp") == store.last_position()
    assert store.recorder.verify().ok


def test_unique_handler_names_are_required():
    with pytest.raises(ValueError, match="unique"):
        Runner(memory_store(), [Stamp(0), Stamp(0)])


class EveryThird(Reactor):
    """Records something for one event in three, nothing for the others."""

    name = "every-third"
    subscribes_to = (IntentArchived,)
    emits = (IntentDeduplicated,)

    def react(self, event, view):
        if event.stream != "in" or event.position % 3:
            return ()
        out = IntentDeduplicated(intent_id=event.event.intent_id, incident_id=event.event_id, fingerprint="f",
                                 window_s=0)
        return [("out", event.follow(out, self.name))]


class Bystander(Reactor):
    """Subscribes to what nobody records here: its checkpoint must still keep up, for free."""

    name = "bystander"
    subscribes_to = (IntentDeduplicated,)
    emits = ()

    def react(self, event, view):
        return ()


def test_a_handler_with_nothing_to_record_costs_no_commit(tmp_path):
    store = open_store(tmp_path / "log.db", create=True)
    seed(store, 30)
    report = Runner(store, [EveryThird(), Bystander()], page=7).run_until_idle()
    assert report.emitted == 10
    # one transaction per output (each carrying every lagging checkpoint), one to close the run
    assert report.transactions == 11
    head = store.last_position()
    assert store.recorder.checkpoints() == {"every-third": head, "bystander": head}
    again = Runner(store, [EveryThird(), Bystander()]).run_until_idle()
    assert (again.handled, again.transactions) == (0, 0)


class Launching(Activity):
    """Records a fact through the runner while it acts, then fails: the fact stays, the
    handling does not count."""

    name = "launching"
    port = "backend"
    subscribes_to = (IntentArchived,)
    emits = (IntentArchived,)

    def perform(self, event, view, progress):
        progress.record("facts", event.follow(IntentArchived(intent_id="fact", deployment="d", outcome="superseded"), "fact"))
        if event.stream == "in":
            raise RuntimeError("the canary died")
        return ()


def test_an_activity_records_progress_at_once_and_its_checkpoint_only_with_its_result():
    store = memory_store()
    seed(store, 1)
    with pytest.raises(RuntimeError):
        Runner(store, [Launching()]).run_until_idle()
    assert [r.stream for r in store.read()] == ["in", "facts"]
    assert store.recorder.checkpoints() == {}


def test_progress_refuses_an_undeclared_event():
    class Sloppy(Launching):
        name = "sloppy"
        emits = ()

    store = memory_store()
    seed(store, 1)
    with pytest.raises(UndeclaredEvent, match="sloppy"):
        Runner(store, [Sloppy()]).run_until_idle()
    assert store.last_position() == 1
