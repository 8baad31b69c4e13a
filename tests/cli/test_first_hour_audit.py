"""Issue 16, a second newcomer's first hour: what still surprised on a fresh clone after the
first round of fixes. Each test runs the installed `selfheal` as a subprocess, the way a
person meets it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SELFHEAL = str(Path(sys.executable).with_name("selfheal"))
ROOT = Path(__file__).resolve().parents[2]
CHAT = '[deployments.chat]\nscenario = "workstation-12gb-speech"\n'


def sh(cwd, *args, env=None, input=None, timeout=120):
    base = {k: v for k, v in os.environ.items() if not k.startswith("SELFHEAL_")}
    return subprocess.run([SELFHEAL, *map(str, args)], cwd=cwd, env={**base, **(env or {})}, input=input,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def demo_log(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo")
    proc = sh(folder, "--db", folder / "demo.db", "demo")
    assert proc.returncode == 0, proc.stderr
    return folder / "demo.db", proc.stdout


def test_a_demo_into_a_log_that_holds_events_prints_none_of_them(tmp_path, demo_log):
    # it used to print the whole old log as if the demo had run, then refuse
    for extra in ([], ["--json"]):
        proc = sh(tmp_path, "--db", demo_log[0], "demo", *extra)
        assert proc.returncode == 1 and proc.stdout == "", proc.stdout
        assert proc.stderr.startswith(f"selfheal: error: {demo_log[0]}: already holds events"), proc.stderr
