"""Smoke tests of the benchmarks: `bench/all.py --quick` runs every script once, small, and
each script's JSON must have the shape its README promises. Timings are never asserted: they
depend on the machine; only that each figure is there and is a number."""
from __future__ import annotations

import json
import subprocess
import sys
from numbers import Number
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def quick():
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "all.py"), "--quick"], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(done.stdout)


def number(value) -> bool:
    return isinstance(value, Number) and not isinstance(value, bool) and value >= 0


def check_targets(result: dict) -> None:
    assert result["targets"]
    for verdict in result["targets"].values():
        assert isinstance(verdict, (bool, dict))
        if isinstance(verdict, dict):
            assert set(verdict) == {"value", "met"} and isinstance(verdict["met"], bool)


def test_all_runs_every_benchmark_and_lists_every_target(quick):
    assert quick["failed"] == {}
    assert set(quick["results"]) == {"observer", "heal_latency", "tuning", "scale", "eventstore"}
    assert {"python", "cpus", "platform"} <= set(quick["machine"])
    assert all(number(s) for s in quick["durations_s"].values())
    assert {t["benchmark"] for t in quick["targets"]} == set(quick["results"])
    assert all(isinstance(t["met"], bool) for t in quick["targets"])


def test_observer_shape(quick):
    r = quick["results"]["observer"]
    check_targets(r)
    assert r["log"]["lines"] == 50_000 and r["log"]["failures_spliced"]
    assert number(r["ours"]["lines_per_s"]) and number(r["baseline"]["lines_per_s"]) and number(r["ratio"])
    # the spliced failures are really in the log, and the rule pack sees them
    assert r["ours"]["findings"] >= 1 and r["ours"]["kinds"]


def test_heal_latency_shape(quick):
    r = quick["results"]["heal_latency"]
    check_targets(r)
    assert r["synchronous"] == "FULL"
    for shape in ("fresh", "one_log"):
        s = r[shape]
        assert s["runs"] == 10 and s["events_incident_to_promotion"] >= 2
        for side in ("ours", "baseline", "until_idle"):
            assert number(s[side]["median_ms"]) and number(s[side]["p99_ms"])
    assert r["long_log"]["log_events"] >= 2_000 and number(r["long_log"]["ours"]["median_ms"])


def test_tuning_shape(quick):
    r = quick["results"]["tuning"]
    check_targets(r)
    rows = r["scenarios"]
    assert set(rows) == {"workstation-12gb-speech", "no-safe-fix"}
    assert rows["workstation-12gb-speech"]["selfheal"]["outcome"] == "promoted"
    assert rows["no-safe-fix"]["selfheal"]["outcome"] == "escalated"
    assert r["not_tuned"] == {"no-safe-fix": "escalated"}
    for row in rows.values():
        assert isinstance(row["selfheal"]["canaries"], int) and isinstance(row["auto_tune"]["canaries"], int)
        assert number(row["best"]["fitness"])
    fraction = rows["workstation-12gb-speech"]["selfheal"]["fraction_of_best"]
    assert 0 < fraction <= 1  # "best" is refined from selfheal's own result, so never below it


def test_scale_shape(quick):
    r = quick["results"]["scale"]
    check_targets(r)
    assert r["replay"]["items"] == 500 and r["rebuild"]["items"] >= 20_000
    for part in ("replay", "rebuild"):
        for key in ("ours_s", "baseline_s", "ours_peak_rss_mb", "baseline_peak_rss_mb"):
            assert number(r[part][key])
    assert "runs" in r["rebuild"]["ours_detail"]["projections"]
