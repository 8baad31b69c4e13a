"""SIGKILL `selfheal run` during a commit, many times: right after each step the log records
(exactly there, whatever the machine's speed) and at points picked by timing alone. After a
restart the file was written exactly once, parsed as YAML at every moment, and the log tells
what happened."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import yaml

from selfheal.eventstore import Pending, new_id, open_store
from selfheal.handlers.loop import import_baseline
from selfheal.edges import deployments
from selfheal.schemas.config import parse_settings
from selfheal.schemas.events import PromotionProposed
from selfheal.schemas.serving import ServingConfig

ROOT = Path(__file__).resolve().parents[2]
ORIGINAL = "model: m\n# ours\ngpu-memory-utilization: 0.9\nmax-model-len: 8192\nmax-num-seqs: 16\n"
NEW = ServingConfig(gpu_memory_utilization=0.65, max_model_len=8192, max_num_seqs=4, max_num_batched_tokens=2048)
STEPS = ["BaselineCommitStarted", "BaselineCommitted", "ReloadRequested", "VerificationFinished"]


def prepare(folder: Path) -> tuple[Path, Path, Path]:
    config_file, toml, db = folder / "vllm.yaml", folder / "selfheal.toml", folder / "log.db"
    config_file.write_text(ORIGINAL)
    toml.write_text(f'''
[deployments.chat]
scenario = "workstation-12gb-speech"
config_file = "{config_file}"
current = {{gpu_memory_utilization = 0.9, max_model_len = 8192, max_num_seqs = 16, max_num_batched_tokens = 2048}}
[deployments.chat.reload]
method = "restart"
argv = ["{sys.executable}", "-c", "import time; time.sleep(0.05)"]
''')
    settings = parse_settings(toml.read_text())
    with open_store(db, create=True) as store:
        import_baseline(store, deployments.build(settings)["chat"])
        promotion = PromotionProposed(promotion_id=new_id(), run_id=new_id(), deployment="chat", candidate_id=new_id(),
                                      config=NEW, previous=settings.deployments["chat"].current_config(), fitness=1.0,
                                      evidence_hash="sha256:x", simulated=False, requires_approval=False)
        store.append(f"promotion-{promotion.promotion_id}", [Pending(event=promotion, event_id=new_id(),
                                                                     occurred_at=datetime.now(timezone.utc))])
    return config_file, toml, db


class Watcher(threading.Thread):
    """Reads the file as fast as it can: every read must parse; counts the versions it saw."""

    def __init__(self, path: Path):
        super().__init__(daemon=True)
        self.path, self.stop, self.inodes, self.bad = path, threading.Event(), [], []

    def run(self):
        while not self.stop.is_set():
            try:
                st = os.stat(self.path)
                text = self.path.read_text()
            except FileNotFoundError:
                self.bad.append("missing")
                continue
            if not self.inodes or self.inodes[-1] != st.st_ino:
                self.inodes.append(st.st_ino)
            if not isinstance(yaml.safe_load(text), dict):
                self.bad.append(text[:80])


def selfheal_run(toml: Path, db: Path, frozen_after: str | None = None) -> subprocess.Popen:
    """`selfheal run`; with `frozen_after`, the process stops itself once that step is recorded."""
    head = [sys.executable, "-m", "selfheal"] if frozen_after is None else \
        [sys.executable, str(Path(__file__).with_name("stop_after_step.py")), frozen_after]
    return subprocess.Popen([*head, "--db", str(db), "--config", str(toml), "run"],
                            cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def kill_when_frozen(proc: subprocess.Popen) -> None:
    """SIGKILL once the process has stopped itself (its state in /proc reads T)."""
    deadline = time.monotonic() + 60
    stat = Path(f"/proc/{proc.pid}/stat")
    while proc.poll() is None and time.monotonic() < deadline:
        if stat.read_text().rsplit(")", 1)[1].split()[0] == "T":
            break
        time.sleep(0.005)
    assert proc.poll() is None, f"selfheal ended before the step: {proc.stderr.read().decode()}"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


def kill_when(proc: subprocess.Popen, db: Path, step: str | None) -> None:
    """SIGKILL as soon as `step` is in the log (None: at once, before any work)."""
    deadline = time.monotonic() + 20
    while step is not None and proc.poll() is None and time.monotonic() < deadline:
        if db.exists():
            try:
                with open_store(db) as store:
                    if any(True for _ in store.read(types=[step])):
                        break
            except Exception:  # the child may be creating or migrating it
                pass
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


TARGETS = [None, *STEPS]


def crash_and_restart(folder: Path, kill) -> str:
    """Start a run, kill it with `kill`, run again to the end; checks what must hold whenever the
    kill landed, and returns the last step the killed run had recorded."""
    folder.mkdir()
    config_file, toml, db = prepare(folder)
    watcher = Watcher(config_file)
    watcher.start()
    try:
        kill(toml, db)
        with open_store(db) as store:
            seen = [r.type for r in store.read(types=STEPS)]
        second = selfheal_run(toml, db)
        assert second.wait(timeout=60) == 0, second.stderr.read().decode()
    finally:
        watcher.stop.set()
        watcher.join()
    with open_store(db) as store:
        steps = [r.type for r in store.read(types=STEPS)]
        written = [r.event for r in store.read(types=["BaselineCommitted"])]
        assert store.recorder.verify().ok
    assert steps == STEPS, steps  # each step once, in order: the log tells what happened
    assert watcher.bad == []
    assert len(watcher.inodes) <= 2, "the file was replaced more than once"
    assert (folder / "vllm.yaml.previous").read_text() == ORIGINAL
    assert yaml.safe_load(config_file.read_text())["gpu-memory-utilization"] == 0.65
    assert "# ours" in config_file.read_text()
    assert len(written) == 1
    return seen[-1] if seen else "before the commit"


#: where the log can stand when a commit is killed: BaselineCommitted and ReloadRequested are
#: recorded in one transaction (handlers/baseline.py), so no kill falls between those two
BOUNDARIES = ["BaselineCommitStarted", "ReloadRequested", "VerificationFinished"]


def test_sigkill_right_after_each_step_of_a_commit(tmp_path):
    for step in BOUNDARIES:
        def kill(toml, db):
            kill_when_frozen(selfheal_run(toml, db, frozen_after=step))
        assert crash_and_restart(tmp_path / step, kill) == step


def test_sigkill_at_points_picked_by_timing(tmp_path):
    """Kills aimed by polling the log land at or after the aimed step (later on a slow machine):
    they reach the points between steps, e.g. while the file is being written."""
    landed = Counter()
    for i, target in enumerate(TARGETS):
        def kill(toml, db):
            kill_when(selfheal_run(toml, db), db, target)
        landed[crash_and_restart(tmp_path / f"try-{i}", kill)] += 1
    print(f"\nkill points reached: {dict(landed)}")
