"""Issue 13, round two, item 1: the first incidents of a deployment captured at once.

The first incident of a deployment also records its baseline (BaselineImported, expected
version 0 on `deployment-NAME`). Several `observe` processes (or live watchers) starting on a
fresh log all see an empty stream; one wins the append, and every other one must see the
baseline is there and go on recording its incident, not exit with a ConcurrencyError.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from selfheal.edges.deployments import from_scenario
from selfheal.edges.live import watch_lines
from selfheal.eventstore import open_store
from selfheal.handlers import loop
from selfheal.schemas.config import parse_settings
from selfheal.schemas.events import IncidentSource
from tests.conftest import StepClock

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = "workstation-12gb-speech"
TOML = f'[deployments.d0]\nscenario = "{SCENARIO}"\n'


def edges():
    settings = parse_settings(TOML)
    return from_scenario("d0", settings.deployments["d0"], settings.preflight.margin_gib)


def lost_the_race(store, winner_path: Path) -> None:
    """Another process records the first incident (and the baseline) between this store's
    look at `deployment-d0` and its append: the look still answers 0."""
    with open_store(winner_path) as winner:
        loop.capture(winner, edges(), "the winner's incident", IncidentSource(kind="stdin"), StepClock())
    store.recorder.stream_version = lambda stream: 0


def recorded(path: Path) -> list[tuple[str, str]]:
    with open_store(path) as store:
        return [(r.type, r.stream) for r in store.read()]


def test_a_capture_that_loses_the_first_baseline_race_still_records_its_incident(tmp_path):
    path = tmp_path / "log.db"
    with open_store(path, create=True) as store:
        lost_the_race(store, path)
        incident_id = loop.capture(store, edges(), "the loser's incident", IncidentSource(kind="stdin"), StepClock())
    events = recorded(path)
    assert [t for t, _ in events].count("BaselineImported") == 1
    assert ("IncidentCaptured", f"incident-{incident_id}") in events
    assert [t for t, _ in events].count("IncidentCaptured") == 2


def test_a_live_watcher_that_loses_the_first_baseline_race_goes_on_watching(tmp_path):
    path = tmp_path / "log.db"
    line = ("ERROR 11-24 06:55:12 [core.py:708] ValueError: Free memory on device cuda:0 (8.41/11.66 GiB) on "
            "startup is less than desired GPU memory utilization (0.9, 10.49 GiB).\n")
    with open_store(path, create=True) as store:
        lost_the_race(store, path)
        captured = watch_lines(store, edges(), iter([line]), IncidentSource(kind="file", path="vllm.log"),
                               threading.Event(), quiet_s=0.01, clock=StepClock())
    assert captured == 1
    types = [t for t, _ in recorded(path)]
    assert types.count("BaselineImported") == 1 and types.count("IncidentCaptured") == 2


CHILD = """
import sys, time
from pathlib import Path
from selfheal.eventstore import open_store
from selfheal.handlers import loop
from tests.reliability.test_round2_races_capture import edges
db, path, ready, go = sys.argv[1:5]
store, deployment = open_store(db), edges()
inputs = [loop.read_input(path)]
Path(ready).touch()
while not Path(go).exists():
    time.sleep(0.0002)
print(loop.capture(store, deployment, *inputs[0]))
"""


def test_four_observes_at_once_on_a_fresh_log_lose_no_incident(tmp_path):
    """Four processes each observe one file on a fresh log, the moment a barrier opens (every
    one has opened the log and read its input by then), three times over: every process exits 0,
    and every incident it reported is in the log, beside one baseline."""
    text = tmp_path / "vllm.log"
    text.write_text("ERROR something went wrong\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    failures = []
    for round_ in range(3):
        db, go = tmp_path / f"log{round_}.db", tmp_path / f"go{round_}"
        open_store(db, create=True).close()  # the race is the baseline's, not the file's creation
        ready = [tmp_path / f"ready{round_}-{n}" for n in range(4)]
        procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(db), str(text), str(r), str(go)], cwd=ROOT,
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for r in ready]
        deadline = time.monotonic() + 60
        while not all(r.exists() for r in ready) and time.monotonic() < deadline:
            time.sleep(0.01)
        go.touch()
        outs = [(p.communicate(timeout=120), p.returncode) for p in procs]
        failures += [err.strip().splitlines()[-1] for (_, err), rc in outs if rc != 0]
        ids = {out.strip() for (out, _), rc in outs if rc == 0}
        events = recorded(db)
        incidents = {stream.removeprefix("incident-") for t, stream in events if t == "IncidentCaptured"}
        assert ids <= incidents, f"round {round_}: an incident a process reported is not in the log"
        assert [t for t, _ in events].count("BaselineImported") == 1
    assert failures == [], f"{len(failures)} of 12 observes failed: {failures[:3]}"
