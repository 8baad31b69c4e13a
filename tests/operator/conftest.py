"""The installed `selfheal` run as a service would run it: a subprocess, stopped by SIGTERM."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

SELFHEAL = shutil.which("selfheal", path=os.path.dirname(sys.executable)) or "selfheal"
SAMPLES = Path(__file__).parents[1] / "observer" / "samples"
DEADLINE_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def selfheal(*args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([SELFHEAL, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, **kw)


class Service:
    """A long-running `selfheal` command; `stop()` sends SIGTERM and returns its stderr."""

    def __init__(self, *args: str, env: dict | None = None, cwd=None):
        self.err_path = Path(cwd or ".") / f"service-{time.monotonic_ns()}.err"
        self._err = open(self.err_path, "w")
        self.proc = subprocess.Popen([SELFHEAL, *args], stdout=subprocess.DEVNULL, stderr=self._err,
                                     env={**os.environ, **(env or {})}, cwd=cwd)

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self._err.close()
        return code, self.err_path.read_text()


@pytest.fixture
def service(tmp_path):
    started: list[Service] = []

    def start(*args: str, env: dict | None = None) -> Service:
        s = Service(*args, env=env, cwd=tmp_path)
        started.append(s)
        return s
    yield start
    for s in started:
        if s.proc.poll() is None:
            s.stop()


def until(check, what: str, deadline_s: float = DEADLINE_S):
    """`check()`'s first truthy answer, polled; fails naming `what` past the deadline."""
    end = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < end:
        try:
            last = check()
            if last:
                return last
        except OSError as exc:  # not listening yet
            last = exc
        time.sleep(0.1)
    pytest.fail(f"{what}: not within {deadline_s:g} s (last: {last!r})")


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert r.status == 200
        return r.read().decode()


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]
