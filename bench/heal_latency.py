"""Heal-latency benchmark: from an incident's append to its promotion event, on the simulator.

Prints one JSON object. The seed-fix path is scenario `d-llama70b-awq-tp2-l40s`: the seed fix
passes its first canary and is promoted (the tournament's climb finds nothing 5% better). A
real SQLite file with synchronous=FULL, the loop exactly as `selfheal heal` drives it:
`handlers.loop.capture` then `handlers.loop.run`. Four shapes:

- fresh:    `--runs` heals, one new log each (the first incident a deployment ever has), each
            with new deployment edges, as each `selfheal heal` process builds them: the
            predictor's load memo starts empty every time;
- one_log:  `--runs` heals in one log, with the dedupe window and rate limit relaxed in the
            settings so that each incident heals again. Each `loop.run` builds a new runner
            and new edges, as every `selfheal run` does; its view starts from the newest projection
            snapshot (projections/snapshots.py, one every 1,000 events), so the slope of
            latency against the log's size is reported too;
- refined:  `--runs` / 4 heals, one new log each, of `a-llama8b-24gb`, whose seed passes but
            the predictor expects a refinement 10% fitter: a second canary and the climb's
            predictions before the promotion (not the seed-fix path; reported beside it);
- long_log: a few heals on a log that already holds 100,000 events of loop history (built as
            bench/scale.py builds its log, every handler's checkpoint at its head, no
            snapshot): what a deployment sees after long use. The first heal folds the whole
            history and writes the first snapshot; it is reported on its own, the median is
            over the heals after it. Not a figure issue 7 asks for.

The latency is taken inside the process: a wrapper on the store marks the moment the
incident's append begins and the moment the append carrying PromotionProposed has committed.

Baseline, in the same run: the heal's own events from the incident to the promotion, appended
with plain sqlite3 + msgspec one transaction each (each step of the loop reacts to the one
before, so each must be durable before the next), WAL and synchronous=FULL, in the same
folder: the cost of just recording the run's events.

    python bench/heal_latency.py            # 200 heals per shape (5 on the long log)
    python bench/heal_latency.py --quick    # 10 heals per shape (3 on a 2,000-event log)
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from selfheal.edges.deployments import from_scenario  # noqa: E402
from selfheal.edges.sim import simulate  # noqa: E402
from selfheal.eventstore import open_store  # noqa: E402
from selfheal.eventstore.recorder import CheckpointAdvance  # noqa: E402
from selfheal.handlers import flow, loop  # noqa: E402
from selfheal.schemas.config import parse_settings  # noqa: E402
from selfheal.schemas.events import IncidentSource  # noqa: E402

SCENARIO = "d-llama70b-awq-tp2-l40s"
REFINED = "a-llama8b-24gb"
RELAXED = "[rate_limit]\nruns = 1000\ncooldown_hours = 0\n[observer]\ndedupe_window_minutes = 0\n"


def _sibling(name: str):
    """Another script of bench/ as a module (bench/ is not a package; `eventstore` would clash)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Marks:
    """Wraps a store's appends (once per store): when the incident's append began, when the
    promotion committed, and how many commits lay between."""

    def __init__(self, store):
        self.reset()
        append, append_many = store.append, store.append_many

        def timed_append(stream, events, expected_version=None):
            if self.incident is None and any(type(p.event).__name__ == "IncidentCaptured" for p in events):
                self.incident = time.perf_counter()
            result = append(stream, events, expected_version)
            self.commits += self.incident is not None and self.promotion is None
            self.all_commits += self.incident is not None
            return result

        def timed_append_many(batches, checkpoints=()):
            result = append_many(batches, checkpoints)
            self.all_commits += self.incident is not None
            if self.incident is not None and self.promotion is None:
                self.commits += 1
                if any(type(p.event).__name__ == "PromotionProposed" for _, events in batches for p in events):
                    self.promotion = time.perf_counter()
            return result

        store.append, store.append_many = timed_append, timed_append_many

    def reset(self) -> None:
        self.incident = self.promotion = None
        self.commits = self.all_commits = 0


def heal_once(store, marks: Marks, settings, edges, text: str, scenario: str = SCENARIO) -> dict:
    marks.reset()
    start = time.perf_counter()
    incident_id = loop.capture(store, edges[scenario], text, IncidentSource(kind="simulator"))
    loop.run(store, settings, edges, "dev")
    idle = time.perf_counter()
    if marks.promotion is None:
        raise SystemExit(f"incident {incident_id} did not end in a promotion: the benchmark's premise is broken")
    # the events of this heal from the incident to the promotion (one deployment, handled in
    # log order: everything between the two positions belongs to this heal)
    events = []
    for e in store.read(store.get(incident_id).position - 1):
        events.append(e)
        if e.type == "PromotionProposed":
            break
    return {"latency_s": marks.promotion - marks.incident, "until_idle_s": idle - start, "commits": marks.commits,
            "events": events, "canaries": sum(e.type == "CanaryStarted" for e in events),
            "all_commits": marks.all_commits, "all_events": store.last_position() - store.get(incident_id).position + 1}


def deployment(scenario: str, extra: str = ""):
    settings = parse_settings(f'mode = "dev"\n{extra}[deployments.{scenario}]\nscenario = "{scenario}"\n')
    edges = {scenario: from_scenario(scenario, settings.deployments[scenario], settings.preflight.margin_gib)}
    return settings, edges, simulate(edges[scenario].backend.scenario, edges[scenario].current).log_text


def fresh(tmp: Path, runs: int, scenario: str = SCENARIO) -> list[dict]:
    out = []
    for i in range(runs):
        # new deployment edges each time, as each `selfheal heal` process builds them: nothing
        # the predictor learnt in an earlier heal (its load memo) helps this one
        settings, edges, text = deployment(scenario)
        with open_store(tmp / f"fresh-{scenario}-{i}.db", create=True, synchronous="FULL") as store:
            out.append(heal_once(store, Marks(store), settings, edges, text, scenario))
    return out


def one_log(tmp: Path, runs: int) -> list[dict]:
    out = []
    with open_store(tmp / "one.db", create=True, synchronous="FULL") as store:
        marks = Marks(store)
        for _ in range(runs):
            settings, edges, text = deployment(SCENARIO, RELAXED)
            before = store.last_position()
            out.append({**heal_once(store, marks, settings, edges, text), "log_events": before})
        out[-1]["log_events_at_end"] = store.last_position()
    return out


def growth(heals: list[dict]) -> dict:
    """How latency grows with the log: least-squares slope over the heals of one log."""
    heals = heals[1:]  # the first heal also pays for warming caches
    sizes = [h["log_events"] for h in heals]
    if len(set(sizes)) < 2:
        return {}
    slope, intercept = statistics.linear_regression(sizes, [h["latency_s"] * 1000 for h in heals])
    return {"log_events_at_end": heals[-1]["log_events_at_end"], "slope_ms_per_1000_events": round(slope * 1000, 2),
            "intercept_ms": round(intercept, 2)}


def long_log(tmp: Path, events: int, runs: int) -> dict:
    """Heals on a log that already holds `events` events of loop history (bench/scale.py's log)."""
    scale = _sibling("scale")
    built = scale.build_big(tmp / "long.db", scale.template(tmp / "template.db"), events)
    settings, edges, text = deployment(SCENARIO, RELAXED)
    with open_store(tmp / "long.db", synchronous="FULL") as store:
        # the history counts as handled, as on a log selfheal has been running on for a while:
        # every handler's checkpoint at the head
        head = store.last_position()
        for handler in flow.handlers(settings, edges, "dev"):
            store.recorder.append_many([], [CheckpointAdvance(handler.name, 0, head)])
        marks = Marks(store)
        heals = [heal_once(store, marks, *deployment(SCENARIO, RELAXED)) for _ in range(runs + 1)]
    return {"runs": runs, "log_events": built["events"],
            "first_heal_no_snapshot_ms": round(heals[0]["latency_s"] * 1000, 2),
            "ours": summary([h["latency_s"] for h in heals[1:]])}


def baseline(path: Path, heals: list[dict]) -> list[float]:
    """Append each heal's events, one transaction per event, to a plain table at FULL sync."""
    be = _sibling("eventstore")  # its baseline table, so that both benchmarks' baselines are one
    conn = be.baseline_db(path, "FULL")
    enc = msgspec.json.Encoder()
    version: dict[str, int] = {}
    out = []
    for heal in heals:
        start = time.perf_counter()
        for e in heal["events"]:
            v = version[e.stream] = version.get(e.stream, 0) + 1
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(be.INSERT, (f"{e.event_id}-{len(out)}", f"{e.stream}-{len(out)}", v, e.type, 1, e.occurred_at,
                                     e.recorded_at, e.correlation_id, e.causation_id, enc.encode(e.event).decode()))
            conn.execute("COMMIT")
        out.append(time.perf_counter() - start)
    conn.close()
    return out


def summary(seconds: list[float]) -> dict:
    ms = sorted(s * 1000 for s in seconds)
    p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
    return {"median_ms": round(statistics.median(ms), 2), "p99_ms": round(p99, 2), "min_ms": round(ms[0], 2),
            "max_ms": round(ms[-1], 2)}


def shape(heals: list[dict], base: list[float]) -> dict:
    ours = summary([h["latency_s"] for h in heals])
    plain = summary(base)
    return {"runs": len(heals), "ours": ours, "until_idle": summary([h["until_idle_s"] for h in heals]),
            "events_incident_to_promotion": len(heals[0]["events"]), "ours_commits": heals[0]["commits"],
            "commits_per_event": round(heals[0]["commits"] / len(heals[0]["events"]), 2),
            "whole_heal": {"events": heals[0]["all_events"], "commits": heals[0]["all_commits"]},
            "canaries": heals[0]["canaries"],
            "baseline": plain, "ratio_median": round(ours["median_ms"] / plain["median_ms"], 2) if plain["median_ms"] else None}


def filesystem(path: Path) -> str:
    try:
        return subprocess.run(["df", "--output=fstype", str(path)], capture_output=True, text=True).stdout.split()[-1]
    except (OSError, IndexError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 heals per shape instead of 200")
    parser.add_argument("--runs", type=int, help="heals per shape")
    parser.add_argument("--long-log", type=int, help="events of history in the long_log shape (default 100,000)")
    parser.add_argument("--dir", help="where the SQLite files go (default: a temporary folder under $TMPDIR)")
    args = parser.parse_args()
    runs = args.runs or (10 if args.quick else 200)
    history = args.long_log or (2_000 if args.quick else 100_000)
    with tempfile.TemporaryDirectory(prefix="selfheal-bench-", dir=args.dir) as tmp:
        tmp = Path(tmp)
        fresh_heals = fresh(tmp, runs)
        refined_heals = fresh(tmp, max(3, runs // 4), REFINED)
        one_heals = one_log(tmp, runs)
        result = {
            "machine": {"python": platform.python_version(), "sqlite": sqlite3.sqlite_version, "cpus": os.cpu_count(),
                        "platform": platform.platform(), "filesystem": filesystem(tmp)},
            "scenario": SCENARIO, "synchronous": "FULL",
            "fresh": shape(fresh_heals, baseline(tmp / "base-fresh.db", fresh_heals)),
            "refined": {"scenario": REFINED, **shape(refined_heals, baseline(tmp / "base-refined.db", refined_heals))},
            "one_log": {**shape(one_heals, baseline(tmp / "base-one.db", one_heals)), **growth(one_heals)},
            "long_log": long_log(tmp, history, 3 if args.quick else 5),
        }
    result["targets"] = {
        f"{name}_median_under_250ms": {"value": result[name]["ours"]["median_ms"],
                                       "met": result[name]["ours"]["median_ms"] < 250}
        for name in ("fresh", "one_log")
    }
    # not among issue 7's figures: the same target past a refinement, and where the log has a history
    result["targets"]["refined_median_under_250ms"] = {"value": result["refined"]["ours"]["median_ms"],
                                                       "met": result["refined"]["ours"]["median_ms"] < 250}
    # the house issue: a runner that costs what the work costs
    result["targets"]["fresh_commits_at_most_2_per_event"] = {"value": result["fresh"]["commits_per_event"],
                                                              "met": result["fresh"]["commits_per_event"] <= 2}
    result["targets"]["fresh_median_at_most_10x_plain"] = {"value": result["fresh"]["ratio_median"],
                                                           "met": (result["fresh"]["ratio_median"] or 0) <= 10}
    result["targets"]["long_log_median_under_250ms"] = {"value": result["long_log"]["ours"]["median_ms"],
                                                        "met": result["long_log"]["ours"]["median_ms"] < 250}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
