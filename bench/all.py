"""Run every benchmark in bench/ and print one JSON object: each figure beside its target, the
machine it ran on, and each script's full output.

Each script runs in its own subprocess, one after the other (never two at once: they would
measure each other), with `--quick` passed through.

    python bench/all.py                      # full sizes (about 10 minutes on 2 cores)
    python bench/all.py --quick              # small sizes, for CI smoke runs
    python bench/all.py --skip eventstore    # leave one out (repeatable)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BENCHES = ("observer", "heal_latency", "tuning", "scale", "eventstore")


def machine() -> dict:
    """Where the figures came from; the benchmarks use the CPU and a local disk, no GPU."""
    info = {"python": platform.python_version(), "sqlite": sqlite3.sqlite_version, "cpus": os.cpu_count(),
            "platform": platform.platform(), "gpu": "none used (CPU and disk only)"}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name"))
        meminfo = Path("/proc/meminfo").read_text().split()
        info["memory_gib"] = round(int(meminfo[meminfo.index("MemTotal:") + 1]) / 2**20, 1)
    except (OSError, StopIteration, ValueError):
        pass
    try:  # a copy without git (a tarball, a machine without the binary) just has no commit
        git = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True)
    except OSError:
        return info
    if git.returncode == 0:
        info["commit"] = git.stdout.strip() + ("+uncommitted changes" if dirty.stdout.strip() else "")
    return info


def targets_of(name: str, result: dict) -> list[dict]:
    """Each script's `targets`, as rows of {benchmark, target, value, met}."""
    rows = []
    for target, verdict in result.get("targets", {}).items():
        if isinstance(verdict, dict):
            rows.append({"benchmark": name, "target": target, "value": verdict.get("value"), "met": verdict.get("met")})
        else:  # bench/eventstore.py gives a bare bool; its figures are in its own output
            rows.append({"benchmark": name, "target": target, "value": None, "met": verdict})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    parser.add_argument("--skip", action="append", default=[], choices=BENCHES, help="leave a benchmark out")
    args = parser.parse_args()
    out = {"machine": machine(), "quick": args.quick, "targets": [], "durations_s": {}, "results": {}, "failed": {}}
    for name in BENCHES:
        if name in args.skip:
            continue
        start = time.perf_counter()
        done = subprocess.run([sys.executable, str(HERE / f"{name}.py"), *(["--quick"] if args.quick else [])],
                              capture_output=True, text=True, cwd=ROOT)
        out["durations_s"][name] = round(time.perf_counter() - start, 1)
        try:
            if done.returncode:
                raise ValueError(f"exit status {done.returncode}")
            result = json.loads(done.stdout)
        except ValueError as exc:
            out["failed"][name] = f"{exc}: {done.stderr.strip()[-2000:]}"
            continue
        out["results"][name] = result
        out["targets"].extend(targets_of(name, result))
    out["all_targets_met"] = bool(out["targets"]) and all(t["met"] for t in out["targets"]) and not out["failed"]
    print(json.dumps(out, indent=2, default=str))
    sys.exit(1 if out["failed"] else 0)


if __name__ == "__main__":
    main()
