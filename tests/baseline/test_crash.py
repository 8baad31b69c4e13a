"""SIGKILL a writer at random points: the config is the old or the new file, never a partial one."""
from __future__ import annotations

import os
import random
import signal
import stat
import time
from pathlib import Path

import yaml

from selfheal.edges.vllm_config import clean_stale_temps, write_atomic

KILLS = 60
LINE = "  " + "x" * 97 + "\n"
# two 5 MB configs: large enough that a kill lands inside a write most of the time
OLD = "version: old\nmax-num-seqs: 4\npayload: |\n" + LINE * 50_000
NEW = "version: new\nmax-num-seqs: 8\npayload: |\n" + LINE.replace("x", "y") * 50_000


def _writer(target: Path) -> int:
    """A forked child that alternates the two contents until it is killed: a real, separate
    process (a fork costs a millisecond where a fresh interpreter costs 120 ms, so many kills
    fit in a second or two); it never returns into pytest."""
    pid = os.fork()
    if pid == 0:
        try:
            i = 0
            while True:
                write_atomic(target, NEW if i % 2 == 0 else OLD)
                i += 1
        finally:
            os._exit(1)
    return pid


def test_sigkill_at_random_points_never_leaves_a_partial_file(tmp_path):
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    folder = tmp_path / "conf"
    folder.mkdir()
    target = folder / "vllm.yaml"
    write_atomic(target, OLD, mode=0o640)
    started = time.monotonic()
    write_atomic(target, OLD + "#\n")  # one write's duration sets the range of kill points
    cycle = time.monotonic() - started
    write_atomic(target, OLD)
    contents = {OLD.encode(): "old", NEW.encode(): "new", (OLD + "#\n").encode(): "old#"}
    seen, mid_write = set(), 0
    for _ in range(KILLS):
        pid = _writer(target)
        try:
            time.sleep(rng.uniform(0, 3 * cycle))
        finally:
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status), "the writer stopped before it was killed"
        raw = target.read_bytes()
        assert raw in (OLD.encode(), NEW.encode()), f"partial or foreign file: {len(raw)} bytes (seed {seed})"
        seen.add(contents[raw])
        data = yaml.load(raw, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        assert data["version"] == contents[raw]
        assert stat.S_IMODE(os.stat(target).st_mode) == 0o640
        previous = folder / "vllm.yaml.previous"
        if previous.exists():  # written atomically too
            assert previous.read_bytes() in contents
        removed = clean_stale_temps(folder)
        mid_write += bool(removed)
        assert not [n for n in os.listdir(folder) if ".selfheal-tmp-" in n]
        assert target.read_bytes() == raw  # cleaning never touches the config itself
    assert seen == {"old", "new"}, f"the child never completed a write in {KILLS} tries: {seen}"
    assert mid_write > 0, "no kill landed inside a write"
