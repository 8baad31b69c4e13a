"""Issue 16.1, live output with real, slow canaries: `heal` (the installed `selfheal`, as a
subprocess) prints each event while the run goes on, and a terminal shows how long a canary's
long phase has run; a pipe or `--json` never gets that progress line.

The canaries are the faithful fake vLLM as processes, each held 2 s in its startup
(FAKE_VLLM_STARTUP_DELAY, in the server, not in selfheal): the run takes seconds for real, so
"printed before the end" and "progress while it waits" are observed, not assumed."""
from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import selfheal
from selfheal.edges.sim import load_scenario, simulate
from tests.fakes.deployment import fake_vllm_deployment

SELFHEAL = str(Path(sys.executable).with_name("selfheal"))
STARTUP_S = 2
ISO_Z = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z"
PROGRESS = "canary loading"   # what cli/live.py shows after a CanaryLaunched, on standard error


def _setup(tmp_path: Path) -> tuple[list[str], str]:
    """A fake-vLLM deployment whose canaries start slowly, and the startup failure to heal."""
    (tmp_path / "selfheal.toml").write_text(fake_vllm_deployment(
        "fake", env={"FAKE_VLLM_STARTUP_DELAY": str(STARTUP_S), "FAKE_VLLM_LINE_DELAY": "0"}))
    log = tmp_path / "vllm.log"
    log.write_text(simulate(load_scenario("workstation-12gb-speech")).log_text)
    return [SELFHEAL, "--db", str(tmp_path / "log.db"), "--config", str(tmp_path / "selfheal.toml"),
            "heal", "--deployment", "fake"], str(log)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SELFHEAL_")}


def _drain(fd: int, timeout_s: float = 0.0) -> bytes:
    """What a pseudo-terminal's master side holds now (waiting up to `timeout_s` for the first byte)."""
    out = b""
    while select.select([fd], [], [], timeout_s)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:   # EIO: every process holding the terminal has closed it
            break
        if not chunk:
            break
        out += chunk
        timeout_s = 0.05
    return out


def _on_terminal(argv: list[str], cwd: Path, timeout_s: float = 180) -> tuple[int, str]:
    """Run argv with standard output and standard error on a fresh pseudo-terminal, as in an
    interactive shell; (exit code, what the terminal got)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, cwd=cwd, env=_env(), stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    terminal = b""
    deadline = time.monotonic() + timeout_s
    try:
        while proc.poll() is None:   # read as it comes: a full terminal buffer would block the writer
            assert time.monotonic() < deadline, f"{argv} did not end within {timeout_s} s"
            terminal += _drain(master, 0.1)
        terminal += _drain(master, 0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return proc.returncode, terminal.decode(errors="replace")


def test_heal_prints_each_event_while_the_run_goes_on(tmp_path):
    argv, log = _setup(tmp_path)
    master, slave = pty.openpty()   # standard error on a terminal: still no progress in a pipe's run
    proc = subprocess.Popen([*argv, log], cwd=tmp_path, env=_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=slave, text=True)
    os.close(slave)
    lines, seen_live = [], None
    try:
        for line in proc.stdout:   # as they come, one by one
            lines.append(line)
            if seen_live is None and "CanaryStarted" in line:
                # the canary is still starting (2 s): the run is not over, its end not yet recorded
                running = proc.poll() is None
                completed = [r.type for r in selfheal.events(types=["CanaryCompleted"], db=tmp_path / "log.db")]
                seen_live = (running, completed)
        proc.wait(timeout=180)
        stderr_terminal = _drain(master, 0.2).decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert proc.returncode == 0, "".join(lines)
    assert seen_live == (True, []), (seen_live, lines)
    started = next(i for i, line in enumerate(lines) if "CanaryStarted" in line)
    assert any("CanaryCompleted" in line for line in lines[started + 1:])
    assert lines[-1].startswith("outcome: promoted.")
    # stdout is a pipe: no progress line anywhere, not even on the terminal standard error still is
    assert PROGRESS not in stderr_terminal and "\r" not in "".join(lines), stderr_terminal


def test_a_terminal_shows_the_canary_progress_and_clears_it(tmp_path):
    argv, log = _setup(tmp_path)
    code, text = _on_terminal([*argv, log], tmp_path)
    assert code == 0, text[-2000:]
    # the progress line is rewritten in place ("\r") on standard error while the canary starts ...
    assert f"\r  ... {PROGRESS} 1 s" in text, text[-2000:]
    # ... and erased ("\r", erase to the end of line) before the next event's line is printed
    spun = [line for line in text.split("\n") if PROGRESS in line]
    for line in spun:
        before, _, after = line.rpartition("\r\033[K")
        assert PROGRESS in before and PROGRESS not in after and re.match(ISO_Z, after), repr(line)
    assert text.rstrip().splitlines()[-1].startswith("outcome: promoted.")


def test_json_on_a_terminal_gets_no_progress_line(tmp_path):
    argv, log = _setup(tmp_path)
    code, text = _on_terminal([*argv, "--json", log], tmp_path)
    assert code == 0, text[-2000:]
    assert PROGRESS not in text and "\033[" not in text, text[-2000:]
    rows = [json.loads(line) for line in text.replace("\r\n", "\n").splitlines() if line]
    assert "CanaryStarted" in [r["type"] for r in rows] and "CanaryCompleted" in [r["type"] for r in rows]
