"""`selfheal observe --follow` as a user runs it: a real process, a real file, rotation, SIGINT."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from selfheal.eventstore import open_store

ROOT = Path(__file__).resolve().parents[2]
FAILURE = ("(EngineCore pid=4242) ERROR 11-24 06:55:12 [core.py:708] ValueError: Free memory on device cuda:0 "
           "(8.41/11.66 GiB) on startup is less than desired GPU memory utilization (0.9, 10.49 GiB). Decrease GPU "
           "memory utilization or reduce GPU memory used by other processes.\n")
HEALTHY = "(APIServer pid=99) INFO 11-24 06:55:10 [api_server.py:1] Started server process\n"


def wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_follow_captures_each_failure_across_rotation(tmp_path):
    config = tmp_path / "selfheal.toml"
    config.write_text('[deployments.chat]\nscenario = "workstation-12gb-speech"\n')
    log = tmp_path / "vllm.log"
    log.write_text(HEALTHY)
    db = tmp_path / "log.db"
    proc = subprocess.Popen([sys.executable, "-m", "selfheal", "--db", str(db), "--config", str(config), "observe",
                             "--follow", str(log), "--quiet-seconds", "0.5"], cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE, text=True)
    try:
        assert wait_for(db.exists)
        time.sleep(0.5)  # let the follower reach the end of the file
        with log.open("a") as f:
            f.write(HEALTHY * 3 + FAILURE)
        store = open_store(db)
        incidents = lambda: [r.event for r in store.read(types=["IncidentCaptured"])]  # noqa: E731
        assert wait_for(lambda: len(incidents()) == 1)
        log.rename(tmp_path / "vllm.log.1")  # logrotate's default: rename, then create
        log.write_text(HEALTHY + FAILURE.replace("8.41", "7.90"))
        assert wait_for(lambda: len(incidents()) == 2)
        texts = [i.raw_text for i in incidents()]
        assert "8.41/11.66" in texts[0] and "7.90/11.66" in texts[1]
        assert all(i.source.kind == "file" and i.source.path == str(log) for i in incidents())
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode in (0, 130)
    assert out.count("incident ") == 2
