"""The installed `selfheal`, run as a person runs it: a subprocess in a folder, with none of the
test machine's SELFHEAL_* variables leaking in."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SELFHEAL = str(Path(sys.executable).with_name("selfheal"))


def clean_env(extra: dict | None = None) -> dict:
    """This process's environment without SELFHEAL_* (a test names what it sets), plus `extra`."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("SELFHEAL_")}, **(extra or {})}


def sh(cwd, *args, env=None, input=None, timeout=120) -> subprocess.CompletedProcess:
    """`selfheal ARGS` in `cwd`, its output captured as text."""
    return subprocess.run([SELFHEAL, *map(str, args)], cwd=cwd, env=clean_env(env), input=input,
                          capture_output=True, text=True, timeout=timeout)
