"""Issue 13, item 11: a canary's processes are swept by their marker when the canary ends.

Stopping the canary's process group misses a child that left it (`setsid`, a daemonizing
helper): it carries the canary's SELFHEAL_CANARY_ID still, and must be gone after the canary
like the group. Processes that do not carry this canary's marker are never touched.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from selfheal.edges import processes
from selfheal.edges.processes import MARKER, _stat, marked_processes, spawn
from selfheal.schemas.serving import ServingConfig

T0 = datetime(2026, 11, 24, 6, 0, tzinfo=timezone.utc)
GOOD = ServingConfig(gpu_memory_utilization=0.65, max_model_len=8192, max_num_seqs=16, max_num_batched_tokens=2048)

#: a leader that starts helpers outside its own group, writes their pids, then waits to be stopped:
#: a `setsid` child (its own session), a child moved to a group of its own (setpgid) that ignores
#: SIGTERM, and a double-forked daemon whose parent is gone
ESCAPER = r"""
import os, subprocess, sys, time
sleep = [sys.executable, "-c", "import time; time.sleep(3600)"]
deaf = [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(3600)"]
a = subprocess.Popen(sleep, start_new_session=True)
b = subprocess.Popen(deaf, process_group=0)
r, w = os.pipe()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.write(w, str(os.getpid()).encode()); os._exit(os.execv(sys.executable, sleep))
    os._exit(0)
os.close(w)
daemon = int(os.read(r, 32))
open(sys.argv[1], "w").write(f"{a.pid} {b.pid} {daemon}")
time.sleep(3600)
"""


def _alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def _wait_for(path: Path, timeout_s: float = 10) -> str:
    deadline = time.monotonic() + timeout_s
    while not (path.exists() and path.read_text()):
        assert time.monotonic() < deadline, f"{path} was never written"
        time.sleep(0.02)
    return path.read_text()


def test_a_setsid_child_of_a_real_canary_is_gone_after_the_canary(backend_for, canary_ids):
    cid = canary_ids()
    out = backend_for(env={"FAKE_VLLM_SPAWN_CHILD": "setsid"}).run(GOOD, T0, canary_id=cid)
    assert out.measurements.passed_load, out.measurements
    assert marked_processes(cid) == [], "a marked child that left the canary's group outlived the canary"


def test_a_canary_that_fails_at_startup_leaves_no_escaped_child_either(backend_for, canary_ids):
    cid = canary_ids()
    out = backend_for(env={"FAKE_VLLM_SPAWN_CHILD": "setsid"}).run(GOOD.changed(gpu_memory_utilization=0.9), T0,
                                                                   canary_id=cid)
    assert not out.measurements.started
    assert marked_processes(cid) == []


def test_stop_reaches_every_marked_process_in_any_group_or_session(tmp_path, canary_ids):
    cid = canary_ids()
    pids_file = tmp_path / "pids"
    child = spawn([sys.executable, "-c", ESCAPER, str(pids_file)], dict(os.environ), tmp_path / "log",
                  canary_id=cid)
    escaped = [int(p) for p in _wait_for(pids_file).split()]
    groups = {_stat(pid)[1] for pid in escaped}
    assert child.pgid not in groups and len(groups) == 3        # three groups, none of them the canary's
    assert sorted(marked_processes(cid)) == sorted([child.pid, *escaped])
    # someone else's process, marked for another canary, in a session of its own
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"],
                                 env={**os.environ, MARKER: f"{cid}-other"}, start_new_session=True)
    try:
        t0 = time.monotonic()
        child.stop(grace_s=0.5)
        assert time.monotonic() - t0 < 8
        assert marked_processes(cid) == []
        assert not any(_alive(pid) for pid in escaped)
        assert bystander.poll() is None, "a process without this canary's marker was stopped"
    finally:
        bystander.kill()
        bystander.wait()


def test_the_sweep_stops_only_the_marked_and_says_which(tmp_path, canary_ids):
    cid = canary_ids()
    marked = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"],
                              env={**os.environ, MARKER: cid}, start_new_session=True)
    unmarked = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"], start_new_session=True)
    try:
        deadline = time.monotonic() + 5
        while marked.pid not in marked_processes(cid):   # the environment is readable once exec is done
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert processes.stop_marked(cid, grace_s=1) == [marked.pid]
        assert marked.wait(timeout=5) == -signal.SIGTERM
        assert unmarked.poll() is None
        assert processes.stop_marked(cid, grace_s=1) == []            # nothing left: a no-op
    finally:
        for p in (marked, unmarked):
            p.kill()
            p.wait()
