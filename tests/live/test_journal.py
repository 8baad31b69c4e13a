"""journal(): driven by an executable stand-in for journalctl placed first on PATH."""
from __future__ import annotations

import json
import os
import sys
import textwrap
import threading
import time

import pytest

from selfheal.edges.journal import JournalctlNotFound, JournalError, journal

UNIT = "vllm-chat.service"
BINARY_TEXT = "ERROR 11-24 06:55:48 [core.py:708] caf\u00e9 ".encode() + b"\xff tail"

# what `journalctl -o json` prints: one object per line, journald's own field names
ENTRIES = [
    {"__CURSOR": "s=3b2f;i=1a2;b=9c1e;m=1f;t=627a;x=77", "__REALTIME_TIMESTAMP": "1732431348123456",
     "__MONOTONIC_TIMESTAMP": "98123456", "_BOOT_ID": "9c1e6f0a", "PRIORITY": "6", "_PID": "5123",
     "_SYSTEMD_UNIT": UNIT, "SYSLOG_IDENTIFIER": "vllm",
     "MESSAGE": "INFO 11-24 06:55:01 [api_server.py:1896] vLLM API server version 0.11.0"},
    {"__REALTIME_TIMESTAMP": "1732431348223456", "PRIORITY": "3", "_SYSTEMD_UNIT": UNIT,
     "MESSAGE": list(BINARY_TEXT)},  # not valid UTF-8: journald gives the bytes as an array
    {"__REALTIME_TIMESTAMP": "1732431348323456", "PRIORITY": "3", "_SYSTEMD_UNIT": UNIT,
     "MESSAGE": "Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"},
    {"__REALTIME_TIMESTAMP": "1732431348423456", "PRIORITY": "6", "_SYSTEMD_UNIT": UNIT, "MESSAGE": None},
    {"__REALTIME_TIMESTAMP": "1732431348523456", "PRIORITY": "3", "_SYSTEMD_UNIT": UNIT,
     "MESSAGE": "ValueError: No available memory for the cache blocks."},
]
EXPECTED = [
    "INFO 11-24 06:55:01 [api_server.py:1896] vLLM API server version 0.11.0",
    "ERROR 11-24 06:55:48 [core.py:708] caf\u00e9 \ufffd tail",
    "Traceback (most recent call last):",
    '  File "x.py", line 1, in <module>',
    "ValueError: No available memory for the cache blocks.",
]


def install(tmp_path, monkeypatch, *, on_term="exit", exit_status=None, stderr=""):
    """Write the stand-in `journalctl` into tmp_path/bin and put it first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    record = tmp_path / "record.json"
    script = bin_dir / "journalctl"
    script.write_text(f"#!{sys.executable}\n" + textwrap.dedent(f"""\
        import json, os, signal, sys, time
        record = {str(record)!r}
        with open(record + ".tmp", "w") as f:
            json.dump({{"argv": sys.argv[1:], "pid": os.getpid()}}, f)
        os.replace(record + ".tmp", record)
        def terminated(*_):
            open(record + ".terminated", "w").close()
            sys.exit(0)
        ignore_term = {on_term == "ignore"!r}
        signal.signal(signal.SIGTERM, signal.SIG_IGN if ignore_term else terminated)
        for entry in {ENTRIES!r}:
            print(json.dumps(entry), flush=True)
        exit_status = {exit_status!r}
        if exit_status is not None:
            sys.stderr.write({stderr!r})
            sys.exit(exit_status)
        while True:
            time.sleep(0.02)
        """))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return record


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_messages_are_yielded_and_journalctl_is_terminated_on_stop(tmp_path, monkeypatch):
    record = install(tmp_path, monkeypatch)
    stop = threading.Event()
    got = []
    for message in journal(UNIT, stop=stop, poll_s=0.01):
        got.append(message)
        if len(got) == len(EXPECTED):
            stop.set()
    assert got == EXPECTED
    seen = json.loads(record.read_text())
    assert seen["argv"] == ["-o", "json", "--all", "-f", "-u", UNIT, "-n", "0"]
    assert (tmp_path / "record.json.terminated").exists()  # SIGTERM, handled
    assert not alive(seen["pid"])


def test_since_is_passed_through(tmp_path, monkeypatch):
    record = install(tmp_path, monkeypatch)
    stream = journal(UNIT, stop=threading.Event(), since="2025-11-24 06:00:00", poll_s=0.01)
    try:
        assert next(stream) == EXPECTED[0]
    finally:
        stream.close()
    assert json.loads(record.read_text())["argv"] == ["-o", "json", "--all", "-f", "-u", UNIT,
                                                     "--since", "2025-11-24 06:00:00"]


def test_closing_the_iterator_kills_a_journalctl_that_ignores_sigterm(tmp_path, monkeypatch):
    record = install(tmp_path, monkeypatch, on_term="ignore")
    stream = journal(UNIT, stop=threading.Event(), poll_s=0.01, term_timeout_s=0.2)
    try:
        assert next(stream) == EXPECTED[0]
        pid = json.loads(record.read_text())["pid"]
        assert alive(pid)
    finally:
        started = time.monotonic()
        stream.close()
    assert time.monotonic() - started < 3
    assert not alive(pid)
    assert not (tmp_path / "record.json.terminated").exists()  # it was killed, not terminated


def test_a_quiet_journal_still_notices_stop(tmp_path, monkeypatch):
    install(tmp_path, monkeypatch)
    stop = threading.Event()
    got = []
    timer = threading.Timer(0.3, stop.set)
    timer.start()
    try:
        got = list(journal(UNIT, stop=stop, poll_s=0.01))  # no stop in the loop: only the timer ends it
    finally:
        timer.cancel()
    assert got == EXPECTED


def test_journalctl_failing_by_itself_is_an_error_with_its_message(tmp_path, monkeypatch):
    install(tmp_path, monkeypatch, exit_status=1, stderr="No journal files were found.\n")
    with pytest.raises(JournalError, match="exited with status 1: No journal files were found"):
        list(journal(UNIT, stop=threading.Event(), poll_s=0.01))


def test_missing_journalctl_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing there
    with pytest.raises(JournalctlNotFound, match="'journalctl'"):
        journal(UNIT, stop=threading.Event())  # raised at the call, before any iteration
    with pytest.raises(JournalctlNotFound, match="/opt/none/journalctl"):
        journal(UNIT, stop=threading.Event(), journalctl="/opt/none/journalctl")
