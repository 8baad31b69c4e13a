"""SIGKILL selfheal while a canary runs: the restarted runner reaps the orphan and finishes.

Real processes throughout: `selfheal run` as a subprocess, the faithful fake vLLM server as
its canary (started by the real vllm backend), SIGKILL from the test.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from selfheal.edges.processes import processes_marked_with
from selfheal.edges.processes import marked_processes as marked_by
from selfheal.edges.sim import load_scenario, simulate
from selfheal.eventstore import open_store
from tests.fakes.deployment import fake_vllm_deployment

ROOT = Path(__file__).resolve().parents[2]



def selfheal(tmp_path, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "selfheal", "--db", str(tmp_path / "log.db"),
                             "--config", str(tmp_path / "selfheal.toml"), *args], cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.fixture
def sweep():
    """Whatever the test's outcome, no marked process it started survives it."""
    before = set(processes_marked_with())
    yield before
    for pid in set(processes_marked_with()) - before:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_sigkill_during_a_canary_leaves_no_orphan(tmp_path, sweep):
    # `sweep` cleans up after a failure; the checks below look at this canary's own marker only,
    # so other tests' canaries running at the same time cannot disturb them
    (tmp_path / "selfheal.toml").write_text(fake_vllm_deployment("fake", env={
        "FAKE_VLLM_STARTUP_DELAY": "30", "FAKE_VLLM_SPAWN_CHILD": "1"}))
    log = tmp_path / "vllm.log"
    log.write_text(simulate(load_scenario("workstation-12gb-speech")).log_text)
    assert selfheal(tmp_path, "observe", "--deployment", "fake", str(log)).wait(timeout=60) == 0

    first = selfheal(tmp_path, "run")
    store = open_store(tmp_path / "log.db")
    deadline = time.monotonic() + 60
    while not list(store.read(types=["CanaryLaunched"])) and time.monotonic() < deadline:
        time.sleep(0.2)
    (launch,) = [r.event for r in store.read(types=["CanaryLaunched"])]
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    assert launch.pid in marked_by(launch.canary_id), "the canary outlives the killed selfheal until it is reaped"

    # the restart finds the launch without a completion, stops the orphan group, runs the canary again
    (tmp_path / "selfheal.toml").write_text((tmp_path / "selfheal.toml").read_text().replace(
        'FAKE_VLLM_STARTUP_DELAY = "30"', 'FAKE_VLLM_STARTUP_DELAY = "0"'))
    second = selfheal(tmp_path, "run")
    try:
        assert second.wait(timeout=120) == 0, second.stderr.read().decode()
    finally:
        if second.poll() is None:
            second.kill()
    (reaped,) = [r.event for r in store.read(types=["CanaryOrphanReaped"])]
    assert (reaped.pid, reaped.alive) == (launch.pid, True) and reaped.signal in ("SIGTERM", "SIGKILL")
    launches = [r.event for r in store.read(types=["CanaryLaunched"]) if r.event.canary_id == launch.canary_id]
    assert [x.attempt for x in launches] == [1, 2]
    assert len([r for r in store.read(types=["CanaryCompleted"]) if r.event.canary_id == launch.canary_id]) == 1
    assert marked_by(launch.canary_id) == []
    assert store.recorder.verify().ok
