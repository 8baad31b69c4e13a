"""Process groups: spawn apart, stop the whole group, and reap only what carries our marker."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from selfheal.edges.processes import (MARKER, carries_marker, free_loopback_port, group_alive, group_members,
                             marked_processes, reap_orphan, spawn, stop_group)

# a leader that starts a grandchild in its own group, then both sleep
TREE = ("import subprocess, sys, time; "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        "print('ready', flush=True); time.sleep(60)")


def _wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_spawn_makes_a_marked_group_and_stop_ends_all_of_it(tmp_path, canary_ids):
    cid = canary_ids()
    child = spawn([sys.executable, "-c", TREE], dict(os.environ), tmp_path / "log", canary_id=cid)
    assert child.pgid == child.pid != os.getpgid(0)            # its own group, not ours
    _wait_for(lambda: len(group_members(child.pgid)) == 2)
    assert sorted(marked_processes(cid)) == sorted(group_members(child.pgid))
    assert group_alive(child.pgid)
    assert child.stop(grace_s=2) == "SIGTERM"
    assert not group_alive(child.pgid) and marked_processes(cid) == []
    assert child.poll() is not None                             # reaped: no zombie left behind
    assert (tmp_path / "log").read_text() == "ready\n"          # stdout went to the log
    assert stop_group(child.pgid, 1) == "none"                  # already gone: tolerated


def test_stop_group_escalates_to_sigkill(tmp_path, canary_ids):
    cid = canary_ids()
    script = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); " \
             "time.sleep(60)"
    child = spawn([sys.executable, "-c", script], dict(os.environ), tmp_path / "log", canary_id=cid)
    _wait_for(lambda: (tmp_path / "log").read_text() == "ready\n")
    t0 = time.monotonic()
    assert child.stop(grace_s=0.3) == "SIGKILL"
    assert 0.3 <= time.monotonic() - t0 < 3
    assert marked_processes(cid) == []


def test_stderr_is_logged_and_the_marker_overrides_the_env(tmp_path, canary_ids):
    cid = canary_ids()
    env = {**os.environ, MARKER: "stale"}
    child = spawn([sys.executable, "-c", f"import os, sys; print(os.environ['{MARKER}'], file=sys.stderr)"],
                  env, tmp_path / "log", canary_id=cid)
    assert child.popen.wait(5) == 0
    assert (tmp_path / "log").read_text() == cid + "\n"
    assert child.stop(1) == "none"


def test_spawn_refuses_a_shell_string(tmp_path):
    with pytest.raises(TypeError):
        spawn("sleep 1; rm -rf /", dict(os.environ), tmp_path / "log")


def test_reap_orphan_stops_a_group_left_by_a_crashed_owner(tmp_path, canary_ids):
    cid = canary_ids()
    # the "crashed selfheal": a process that spawns a canary group, prints its ids and dies without stopping it
    owner = ("import os, sys; from edges.processes import spawn; "
             f"c = spawn([sys.executable, '-c', {TREE!r}], dict(os.environ), {str(tmp_path / 'log')!r}, "
             f"canary_id={cid!r}); print(c.pid, c.pgid)")
    pid, pgid = map(int, subprocess.run([sys.executable, "-c", owner], check=True, capture_output=True,
                                        text=True, timeout=30).stdout.split())
    _wait_for(lambda: len(group_members(pgid)) == 2)             # the orphans: leader and grandchild
    assert not carries_marker(pid, "another-canary")
    assert reap_orphan(pid, pgid, "another-canary", grace_s=1) == (False, None)   # not ours: untouched
    assert len(group_members(pgid)) == 2
    assert reap_orphan(pid, pgid, cid, grace_s=2) == (True, "SIGTERM")
    assert marked_processes(cid) == [] and not group_alive(pgid)
    assert reap_orphan(pid, pgid, cid, grace_s=1) == (False, None)   # a second restart finds nothing


def test_reap_orphan_never_kills_an_unmarked_process(tmp_path):
    # a recycled pid: a live process in its own group whose environment lacks the canary's marker
    env = {k: v for k, v in os.environ.items() if k != MARKER}
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env,
                                start_new_session=True)
    try:
        _wait_for(lambda: group_alive(stranger.pid))
        assert reap_orphan(stranger.pid, stranger.pid, "test-recycled", grace_s=0.5) == (False, None)
        time.sleep(0.1)
        assert stranger.poll() is None and group_alive(stranger.pid)
        assert reap_orphan(os.getpid(), os.getpgid(0), "test-recycled") == (False, None)   # nor us
    finally:
        stranger.kill()
        stranger.wait()


def test_group_alive_for_a_group_that_never_existed():
    pid = 2 ** 22 - 7   # above the default pid_max of many systems; certainly not a group here
    assert not group_alive(pid) and group_members(pid) == []
    assert stop_group(pid, 0.1) == "none"
    assert reap_orphan(pid, pid, "test-none") == (False, None)


def test_free_loopback_port_can_be_bound():
    port = free_loopback_port()
    assert 1024 <= port < 65536
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
