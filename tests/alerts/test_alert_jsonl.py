"""JsonlSink: exact lines, owner-only permissions, and no torn line when processes race."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import msgspec

from selfheal.edges.alerts import Alert, JsonlSink, to_json

from .conftest import make_alert

REPO = Path(__file__).resolve().parents[2]


def test_appends_exact_lines(tmp_path):
    path = tmp_path / "alerts.jsonl"
    sink = JsonlSink(path)
    alerts = [make_alert(i) for i in range(3)]
    for a in alerts:
        result = sink.deliver(a)
        assert result.ok, result.detail
        assert len(result.attempts) == 1 and result.attempts[0].error is None
    assert path.read_bytes() == b"".join(to_json(a) + b"\n" for a in alerts)
    assert [msgspec.json.decode(line, type=Alert) for line in path.read_bytes().splitlines()] \
        == alerts


def test_created_owner_only_and_existing_mode_kept(tmp_path):
    old = os.umask(0)  # even with no umask at all, the file is created 0o600
    try:
        path = tmp_path / "alerts.jsonl"
        assert JsonlSink(path).deliver(make_alert()).ok
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        other = tmp_path / "shared.jsonl"
        other.touch()
        other.chmod(0o640)
        assert JsonlSink(other).deliver(make_alert()).ok
        assert stat.S_IMODE(other.stat().st_mode) == 0o640
    finally:
        os.umask(old)


def test_a_torn_last_line_left_by_a_crash_does_not_swallow_the_next(tmp_path):
    path = tmp_path / "alerts.jsonl"
    good = to_json(make_alert(1)) + b"\n"
    path.write_bytes(good + b'{"alert_id": "half-writ')
    alert = make_alert(2)
    assert JsonlSink(path).deliver(alert).ok
    lines = path.read_bytes().split(b"\n")
    assert lines[0] + b"\n" == good and lines[1] == b'{"alert_id": "half-writ'
    assert lines[2] == to_json(alert) and lines[3] == b""


def test_failure_is_reported_not_raised(tmp_path):
    result = JsonlSink(tmp_path / "missing-dir" / "alerts.jsonl").deliver(make_alert())
    assert not result.ok
    assert result.attempts[0].error.startswith("FileNotFoundError")


WRITER = """
import sys
from datetime import datetime, timezone
from selfheal.edges.alerts import Alert, JsonlSink
sink, tag = JsonlSink(sys.argv[1]), sys.argv[2]
sys.stdin.readline()  # start together
for i in range(200):
    # big lines make interleaving likely if it could happen at all
    r = sink.deliver(Alert(alert_id=f"{tag}-{i}", deployment="chat", kind="escalation",
                           summary="race", evidence={"pad": tag * 6000},
                           raised_at=datetime.now(timezone.utc), fingerprint="fp"))
    assert r.ok, r.detail
"""


def test_two_processes_appending_leave_no_torn_line(tmp_path):
    path = tmp_path / "alerts.jsonl"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), tag], cwd=REPO,
                              stdin=subprocess.PIPE) for tag in "pq"]
    for p in procs:
        p.stdin.write(b"go\n")
        p.stdin.flush()
    for p in procs:
        p.stdin.close()
        assert p.wait(timeout=60) == 0
    data = path.read_bytes()
    assert data.endswith(b"\n")
    lines = data.split(b"\n")[:-1]
    assert len(lines) == 400
    ids = [json.loads(line)["alert_id"] for line in lines]  # every line parses whole
    for tag in "pq":
        mine = [x for x in ids if x.startswith(tag + "-")]
        assert mine == [f"{tag}-{i}" for i in range(200)]  # each writer's order is kept
