"""Nodes of a fleet as real processes: `selfheal run --follow` per node, each with its own
selfheal.toml, all on one PostgreSQL log."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from selfheal.edges.sim import load_scenario, simulate

SELFHEAL = shutil.which("selfheal", path=str(Path(sys.executable).parent)) or "selfheal"


class Node:
    def __init__(self, folder: Path, url: str, toml: str, env: dict | None = None):
        self.folder, self.url = folder, url
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "selfheal.toml").write_text(toml)
        self.env = dict(os.environ, **(env or {}))
        self.proc: subprocess.Popen | None = None

    def selfheal(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([SELFHEAL, "--db", self.url, *args], cwd=self.folder, env=self.env,
                              capture_output=True, text=True, timeout=120)

    def start(self) -> "Node":
        self.proc = subprocess.Popen([SELFHEAL, "--db", self.url, "run", "--follow", "--interval", "0.2", "--json"],
                                     cwd=self.folder, env=self.env, stdout=subprocess.DEVNULL,
                                     stderr=open(self.folder / "run.err", "w"), start_new_session=True)
        return self

    def observe(self, deployment: str, scenario: str) -> None:
        log = self.folder / f"{deployment}.log"
        log.write_text(simulate(load_scenario(scenario)).log_text)
        done = self.selfheal("observe", "--deployment", deployment, str(log))
        assert done.returncode == 0, done.stderr

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def rows(url: str, sql: str, *params) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def wait_for(what, timeout: float = 120, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = what()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {getattr(what, '__name__', what)}")
