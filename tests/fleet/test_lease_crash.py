"""A node's runner killed mid-canary while another node's runner waits for the lease: the other
takes over, reaps the orphan, and no canary runs twice at once and no budget is spent twice.
And the fence: a runner whose lease passed to another records nothing more."""
from __future__ import annotations

import os
import signal
import time

import pytest

pytest.importorskip("psycopg", reason="psycopg is not installed: pip install -e '.[test]' brings it")

from tests.eventstore.contract import ev  # noqa: E402
from tests.fakes.deployment import fake_vllm_deployment  # noqa: E402
from tests.fleet.nodes import Node, rows, wait_for  # noqa: E402

TTL = "2"


def test_a_runner_killed_mid_canary_hands_over_without_a_second_canary_or_run(tmp_path, pg_url):
    launches = tmp_path / "launches.log"
    toml = fake_vllm_deployment("speech", env={"FAKE_VLLM_LINE_DELAY": "0", "FAKE_VLLM_TOKEN_DELAY": "0",
                                               "FAKE_VLLM_STARTUP_DELAY": "4", "FAKE_VLLM_LAUNCH_LOG": launches})
    env = {"SELFHEAL_LEASE_TTL_S": TTL}
    a, b = (Node(tmp_path / name, pg_url, toml, dict(env, SELFHEAL_NODE=name)) for name in "ab")
    assert a.selfheal("init").returncode == 0
    try:
        a.start(), b.start()
        a.observe("speech", "workstation-12gb-speech")
        wait_for(lambda: rows(pg_url, "SELECT 1 FROM events WHERE type = 'CanaryLaunched'"))
        (holder,) = rows(pg_url, "SELECT holder FROM leases WHERE name = 'deployment:speech'")[0]
        victim = next(n for n in (a, b) if str(n.proc.pid) == holder.split(":")[1])
        survivor = b if victim is a else a
        os.kill(victim.proc.pid, signal.SIGKILL)  # mid-canary: its server goes on, orphaned
        victim.proc.wait()
        wait_for(lambda: rows(pg_url, "SELECT 1 FROM events WHERE type = 'IntentArchived'"), timeout=180)
        time.sleep(1)
    finally:
        a.stop(), b.stop()
    assert survivor.proc.returncode in (0, 130, -15), (survivor.folder / "run.err").read_text()[-2000:]
    holder, token = rows(pg_url, "SELECT holder, token FROM leases WHERE name = 'deployment:speech'")[0]
    assert holder.split(":")[1] == str(survivor.proc.pid) and token >= 2  # the lease changed hands once or more

    log = rows(pg_url, "SELECT position, type, data::json->>'canary_id', data::json->>'alive' FROM events "
                       "ORDER BY position")
    launched = [(p, c) for p, t, c, _ in log if t == "CanaryLaunched"]
    assert len(launches.read_text().splitlines()) == len(launched)  # every server started is in the log
    for canary in {c for _, c in launched}:
        completed = [p for p, t, c, _ in log if t == "CanaryCompleted" and c == canary]
        assert len(completed) == 1, f"canary {canary} completed {len(completed)} times"
        starts = [p for p, c in launched if c == canary]
        reaped = [p for p, t, c, _ in log if t == "CanaryOrphanReaped" and c == canary]
        # a second start of one canary only after the first one's server was reaped
        for later in starts[1:]:
            assert any(r < later for r in reaped), f"canary {canary} started again before its orphan was reaped"
    assert any(t == "CanaryOrphanReaped" and alive == "true" for _, t, _, alive in log)
    counts = {t: sum(1 for _, u, _, _ in log if u == t) for t in ("RunRequested", "RunStarted", "RunFinished")}
    assert counts == {"RunRequested": 1, "RunStarted": 1, "RunFinished": 1}  # the budget was spent once
    assert a.selfheal("verify").returncode == 0


def test_a_runner_whose_lease_passed_to_another_writes_nothing(pg_url):
    from selfheal.eventstore.postgres import LeaseLost, PostgresRecorder

    with PostgresRecorder(pg_url, create=True) as node_a, PostgresRecorder(pg_url) as node_b:
        node_a.fence["deployment:x"] = node_a.acquire_lease("deployment:x", "a", 0.2)
        node_a.append("s", [ev(1)])  # holding the lease: recorded
        assert node_b.acquire_lease("deployment:x", "b", 30) is None  # not while a's lease lasts
        time.sleep(0.3)
        assert node_b.acquire_lease("deployment:x", "b", 30) == 2  # expired: b takes it, token 2
        with pytest.raises(LeaseLost, match="deployment:x passed to another runner"):
            node_a.append("s", [ev(2)])  # a, stalled past its lease, wakes up: fenced
        with pytest.raises(LeaseLost):
            node_a.append_many([], [])
        assert node_a.acquire_lease("deployment:x", "a", 30) is None
        assert node_b.last_position() == 1
        node_b.release_lease("deployment:x", "b")
        assert node_a.acquire_lease("deployment:x", "a", 30) == 3  # released: the next holder's token is higher
