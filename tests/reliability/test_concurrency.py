"""Concurrency on one real SQLite log: four writer processes and a handler process at once;
two `selfheal run` processes on one log.

Real processes throughout (separate interpreters, `eventstore.open_store` on one file with its
default durability, synchronous=FULL); nothing is mocked.
"""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from selfheal.edges.processes import processes_marked_with
from selfheal.eventstore import Pending, open_store
from selfheal.handlers.runtime import Reactor, Runner
from selfheal.schemas.events import IntentArchived, IntentDeduplicated
from tests.conftest import T0
from tests.fakes.deployment import fake_vllm_deployment
from tests.reliability.procs import OUT, SHARED

ROOT = Path(__file__).resolve().parents[2]
WRITERS = 4
PER_WRITER = 10_000
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


def _proc(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.reliability.procs", *args], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_four_writers_and_a_handler_process_lose_nothing_and_handle_once(tmp_path):
    path = tmp_path / "shared.db"
    open_store(path, create=True).close()
    started = time.monotonic()
    runner = _proc("run", str(path), str(WRITERS * PER_WRITER), "400")
    # the writers start once the handler process is looping (its runner lock file exists), so
    # on a slow or busy machine the handling still overlaps the writing this test is about
    lock = Path(f"{path.resolve()}.runner-lock")
    deadline = time.monotonic() + 60
    while not lock.exists() and runner.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert lock.exists(), "the handler process never started its first round"
    writers = [_proc("append", str(path), str(n), str(PER_WRITER), str(1000 + n)) for n in range(WRITERS)]
    for w in writers:
        out, err = w.communicate(timeout=420)
        assert w.returncode == 0, err[-3000:]
    writers_done = time.monotonic() - started
    out, err = runner.communicate(timeout=420)
    assert runner.returncode == 0, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    elapsed = time.monotonic() - started

    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    rows = conn.execute("SELECT position, event_id, stream, version, type, causation_id FROM events "
                        "ORDER BY position").fetchall()
    conn.close()
    total_inputs = WRITERS * PER_WRITER
    # every input and every output, positions gap-free 1..N
    assert [r[0] for r in rows] == list(range(1, 2 * total_inputs + 1))
    inputs = [r for r in rows if r[4] == "IntentArchived"]
    outputs = [r for r in rows if r[4] == "IntentDeduplicated"]
    assert len(inputs) == total_inputs and len(outputs) == total_inputs
    # every event present exactly once
    expected_ids = {f"w{n}-{i}" for n in range(WRITERS) for i in range(PER_WRITER)}
    assert Counter(r[1] for r in inputs) == Counter(expected_ids)
    # each writer's events are in the order it wrote them
    for n in range(WRITERS):
        mine = [int(r[1].split("-")[1]) for r in inputs if r[1].startswith(f"w{n}-")]
        assert mine == list(range(PER_WRITER))
    # per-stream versions gap-free, and increasing with position
    versions: dict[str, list[int]] = defaultdict(list)
    for r in rows:
        versions[r[2]].append(r[3])
    for stream, vs in versions.items():
        assert vs == list(range(1, len(vs) + 1)), stream
    assert SHARED in versions and len({r[1].split("-")[0] for r in inputs if r[2] == SHARED}) == WRITERS
    # exactly one output per input, and outputs only for inputs
    per_cause = Counter(r[5] for r in outputs)
    assert set(per_cause) == expected_ids and set(per_cause.values()) == {1}
    assert all(r[2] == OUT for r in outputs)
    # the handler's checkpoint is the last position it examined: the end of the log
    with open_store(path) as store:
        assert store.recorder.verify().ok
        assert store.recorder.checkpoint("stamp") == summary["last_examined"] == store.last_position()
    assert summary["handled"] == total_inputs and summary["conflicts"] == 0
    assert summary["seen"] == 2 * total_inputs  # the reader saw the whole log, always as a gap-free prefix
    # handling really ran while the writers wrote: outputs are interleaved with inputs
    assert outputs[0][0] < inputs[-1][0]
    print(f"\n4 x {PER_WRITER} events + handler: writers done in {writers_done:.1f} s, all handled in "
          f"{elapsed:.1f} s ({summary['rounds']} runner rounds)")


# --- two runners on one log --------------------------------------------------------------------

SCENARIO = "workstation-12gb-speech"
DEPLOYMENTS = 6


def _seed_incidents(folder: Path, deployments: int) -> tuple[Path, Path]:
    """A config of simulated deployments and a log holding two incidents of each (the second
    is folded into the first one's intent): enough work for two runners to meet."""
    from selfheal.edges import deployments as deployment_edges
    from selfheal.edges.sim import load_scenario, simulate
    from selfheal.handlers.loop import capture
    from selfheal.schemas.config import parse_settings
    from selfheal.schemas.events import IncidentSource

    toml = folder / "selfheal.toml"
    toml.write_text('mode = "dev"\n' + "".join(f'[deployments.ws{i}]\nscenario = "{SCENARIO}"\n'
                                               for i in range(deployments)))
    edges = deployment_edges.build(parse_settings(toml.read_text()))
    text = simulate(load_scenario(SCENARIO)).log_text
    db = folder / "log.db"
    with open_store(db, create=True) as store:
        for i in range(deployments):
            for _ in range(2):
                capture(store, edges[f"ws{i}"], text, IncidentSource(kind="file", path="vllm.log"))
    return toml, db


def _selfheal(db: Path, toml: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "selfheal", "--db", str(db), "--config", str(toml), *args],
                            cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_selfheal_runs_never_both_act_on_one_event(tmp_path):
    """Each handler's output appears at most once per cause, whichever runner committed it.

    (That nothing is SKIPPED when two runners meet in one process is shown below.)"""
    conflicts = 0
    for attempt in range(3):
        folder = tmp_path / f"round-{attempt}"
        folder.mkdir()
        toml, db = _seed_incidents(folder, DEPLOYMENTS)
        runs = [_selfheal(db, toml, "run", "--json"), _selfheal(db, toml, "run", "--json")]
        for proc in runs:
            out, err = proc.communicate(timeout=180)
            assert proc.returncode == 0, err[-2000:]
            conflicts += json.loads(out.strip().splitlines()[-1])["conflicts"]
        with open_store(db) as store:
            rows = list(store.read())
            assert store.recorder.verify().ok
        per_cause = Counter((r.causation_id, r.type) for r in rows if r.causation_id)
        twice = {k: n for k, n in per_cause.items() if n > 1}
        assert not twice, f"round {attempt}: outputs recorded more than once for one cause: {twice}"
        assert len({r.event_id for r in rows}) == len(rows)
        assert any(r.type == "PromotionProposed" for r in rows)  # the loop really ran
    # runners of one log take turns (handlers/runtime.py's lock), so the second one finds the
    # work done: nothing conflicts any more, and nothing is recorded twice
    assert conflicts == 0


class HookedStamp(Reactor):
    """One output (random id) per IntentArchived; its first handling first calls `hook`, so a
    test can make another runner act at exactly that moment."""

    name = "stamp"
    subscribes_to = (IntentArchived,)
    emits = (IntentDeduplicated,)

    def __init__(self, hook=None):
        self.hook = hook

    def react(self, event, view):
        if self.hook is not None:
            pending, self.hook = self.hook, None
            pending()
        out = IntentDeduplicated(intent_id=event.event.intent_id, incident_id=event.event_id,
                                 fingerprint="f", window_s=0)
        return [("out", Pending(event=out, event_id=str(uuid.uuid4()), occurred_at=event.occurred,
                                causation_id=event.event_id))]


def test_a_runner_that_loses_a_race_never_skips_an_event(tmp_path):
    path = tmp_path / "log.db"
    first = open_store(path, create=True)
    noise = IntentDeduplicated(intent_id="n", incident_id="n", fingerprint="f", window_s=0)
    first.append("noise", [Pending(event=noise, event_id="noise-1", occurred_at=T0)])       # position 1
    first.append("in", [Pending(event=IntentArchived(intent_id=str(i), deployment="d", outcome="promoted"),
                                event_id=f"in-{i}", occurred_at=T0) for i in (2, 3)])        # positions 2, 3
    second = open_store(path)
    other = Runner(second, [HookedStamp()])
    # while `racer` handles position 2, the other runner examines position 1 (nothing to do
    # there) and moves the shared checkpoint 0 -> 1; racer's commit 0 -> 2 then conflicts
    racer = Runner(first, [HookedStamp(hook=lambda: other.run_until_idle(max_events=1))])
    racer.run_until_idle()
    other.run_until_idle()
    Runner(open_store(path), [HookedStamp()]).run_until_idle()  # a third, fresh runner: nothing is left for it
    outputs = Counter(r.causation_id for r in first.read_stream("out"))
    assert outputs == {"in-2": 1, "in-3": 1}, f"outputs per input: {dict(outputs)}"


STAND_IN = Path(__file__).resolve().parent / "stand_in.py"



@pytest.fixture
def canary_sweep():
    """Whatever the outcome, no canary process started during the test survives it."""
    import signal

    before = set(processes_marked_with())
    yield
    for pid in set(processes_marked_with()) - before:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_two_selfheal_runs_never_both_start_a_canary(tmp_path, canary_sweep):
    launches = tmp_path / "launches.jsonl"
    toml = tmp_path / "selfheal.toml"
    toml.write_text(fake_vllm_deployment("fake", scenario=SCENARIO, wrapper=(str(STAND_IN),), env={
        "FAKE_VLLM_STARTUP_DELAY": "1.5", "STANDIN_RECORD": launches, "STANDIN_EXEC": "1"}))
    from selfheal.edges.sim import load_scenario, simulate

    log = tmp_path / "vllm.log"
    log.write_text(simulate(load_scenario(SCENARIO)).log_text)
    db = tmp_path / "log.db"
    observe = _selfheal(db, toml, "observe", "--deployment", "fake", str(log))
    assert observe.wait(timeout=60) == 0, observe.stderr.read()
    # both follow the log, so both see every event; stopped once the run has finished
    runners = [_selfheal(db, toml, "run", "--follow", "--interval", "0.2") for _ in range(2)]
    try:
        deadline = time.monotonic() + 90
        finished = False
        while time.monotonic() < deadline and not finished and all(p.poll() is None for p in runners):
            time.sleep(0.5)
            with open_store(db) as store:
                finished = any(True for _ in store.read(types=["RunFinished"]))
    finally:
        import signal

        for p in runners:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in runners:
            try:
                p.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.communicate()
    started = [json.loads(line)["canary_id"] for line in launches.read_text().splitlines()]
    with open_store(db) as store:
        reaped = [r.event for r in store.read(types=["CanaryOrphanReaped"])]
        assert store.recorder.verify().ok
    assert started, "no canary was started"
    assert {c: n for c, n in Counter(started).items() if n > 1} == {}, "a canary was started by both runners"
    assert reaped == [], f"a runner stopped the other runner's live canary: {reaped}"
    assert finished, "the run did not finish"
