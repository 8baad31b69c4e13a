"""CommandSink with real processes: JSON on stdin, failure, and a timeout that kills the group."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from selfheal.edges.alerts import CommandSink, to_json


def test_the_command_reads_the_alert_json_on_stdin(tmp_path, alert):
    out = tmp_path / "got.json"
    code = ("import os, sys, pathlib; data = sys.stdin.buffer.read(); "
            "pathlib.Path(sys.argv[1]).write_bytes(data); "
            "print('kind', os.environ['SELFHEAL_ALERT_KIND'])")
    result = CommandSink([sys.executable, "-c", code, str(out)]).deliver(alert)
    assert result.ok, result.detail
    assert out.read_bytes() == to_json(alert)
    [attempt] = result.attempts
    assert attempt.status == 0 and attempt.error is None
    assert "stdout: kind escalation" in result.detail


def test_arguments_are_never_given_to_a_shell(tmp_path, alert):
    marker = tmp_path / "pwned"
    argv = [sys.executable, "-c", "import sys; print(sys.argv[1])", f"x; touch {marker}"]
    result = CommandSink(argv).deliver(alert)
    assert result.ok and f"x; touch {marker}" in result.detail and not marker.exists()


def test_a_failing_command_is_not_ok_and_its_output_is_kept(alert):
    code = "import sys; sys.stdin.read(); print('tried'); sys.stderr.write('boom: no route\\n'); sys.exit(3)"
    result = CommandSink([sys.executable, "-c", code]).deliver(alert)
    assert not result.ok
    assert result.attempts[0].status == 3 and result.attempts[0].error == "exit status 3"
    assert "stdout: tried" in result.detail and "stderr: boom: no route" in result.detail


def test_a_missing_program_is_a_failed_delivery(tmp_path, alert):
    result = CommandSink([str(tmp_path / "no-such-notifier")]).deliver(alert)
    assert not result.ok and result.attempts[0].status is None
    assert result.attempts[0].error.startswith("FileNotFoundError")


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")  # killed, awaiting a reaper that is not us


def test_a_timeout_kills_the_command_and_what_it_started(tmp_path, alert):
    pidfile = tmp_path / "child.pid"
    code = ("import subprocess, sys, time; "
            "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            f"open({str(pidfile)!r}, 'w').write(str(c.pid)); print('started', flush=True); "
            "time.sleep(60)")
    t0 = time.monotonic()
    result = CommandSink([sys.executable, "-c", code], timeout_s=1.0).deliver(alert)
    assert time.monotonic() - t0 < 5
    assert not result.ok
    [attempt] = result.attempts
    assert attempt.status is None and "timed out after 1s" in attempt.error
    assert "stdout: started" in result.detail
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 3
    while not _gone(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _gone(child)
