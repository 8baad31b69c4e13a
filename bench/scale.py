"""Scale benchmark: replay 10,000 captured incidents through the rule pack, and rebuild every
projection over a 1,000,000-event log of loop events; time and peak memory, each beside a
plain decode loop measured in the same run.

Prints one JSON object. The logs are built here:

- a template: every bundled scenario healed once on the simulator, in one log, by the real
  loop (`handlers.loop.capture` + `loop.run`): incidents with their full vLLM text,
  observations, intents, runs, candidates, canaries, scores, promotions, escalations, alerts;
- the big log: that template repeated until it holds `--events` events, each copy with every
  id renamed (so each copy is new incidents, intents and runs of the same deployments) and its
  times set one template span plus an hour apart, the last copy ending where the template did
  (the history lies in the past); baseline imports only in the first copy;
- the incident log: 10,000 IncidentCaptured events whose texts cycle through the template's
  incidents (production and canary logs) and the captured samples in tests/observer/samples/.

Each measurement runs in a fresh subprocess, which reports its time and peak RSS
(ru_maxrss), as bench/eventstore.py does:

- replay: read the incidents back (`EventStore.read`) and `diagnose` each text; baseline:
  plain sqlite3 + msgspec decode of the same rows and one literal tested on each text;
- rebuild: `projections.rebuild` (every registered projection, one pass); baseline: plain
  sqlite3 + msgspec decode of every row into its Struct, counting by type. The two take turns
  `--runs` times (default 2) and the fastest of each is kept; `ratio_time` is rebuild over
  decode, and `targets` says whether it is at most 1.5 and the rebuild's peak RSS under 200 MB.

    python bench/scale.py            # 10,000 incidents, 1,000,000 events
    python bench/scale.py --quick    # 500 incidents, 20,000 events
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from selfheal.edges.deployments import build  # noqa: E402
from selfheal.edges.sim import bundled_scenarios, simulate  # noqa: E402
from selfheal.eventstore import Pending, open_store  # noqa: E402
from selfheal.eventstore.recorder import AppendRequest, NewEvent, parse_utc, utc_iso  # noqa: E402
from selfheal.eventstore.store import new_id  # noqa: E402
from selfheal.handlers import loop  # noqa: E402
from selfheal.schemas.config import parse_settings  # noqa: E402
from selfheal.schemas.events import IncidentCaptured, IncidentSource  # noqa: E402

SAMPLES = ROOT / "tests" / "observer" / "samples"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
NS = uuid.UUID("0b6c4c5e-3f7a-4d16-9a55-2f0f4f1c7e21")
LITERAL = "CUDA out of memory"


def template(path: Path) -> list:
    """Heal every bundled scenario once on the simulator; the log's rows."""
    names = bundled_scenarios()
    settings = parse_settings('mode = "dev"\n' + "".join(f'[deployments.{n}]\nscenario = "{n}"\n' for n in names))
    edges = build(settings)
    with open_store(path, create=True, synchronous="OFF") as store:
        for name in names:
            text = simulate(edges[name].backend.scenario, edges[name].current).log_text
            loop.capture(store, edges[name], text, IncidentSource(kind="simulator"))
        loop.run(store, settings, edges, "dev")
        return list(store.recorder.read(0))


def build_big(path: Path, rows: list, total: int) -> dict:
    """Repeat the template's rows, renamed and moved in time, until at least `total` events are
    written (whole copies, so every run in the log has its outcome)."""
    times = [parse_utc(r.occurred_at) for r in rows]
    shift = (max(times) - min(times)) + timedelta(hours=1)
    # history lies in the past: the last copy ends where the template did
    first = -(-total // max(1, sum(r.type != "BaselineImported" for r in rows)))
    copies = 0
    written = 0
    with open_store(path, create=True, synchronous="OFF") as store:
        while written < total:
            k = copies
            ids: dict[str, str] = {}

            def rename(text, k=k, ids=ids):
                if text is None or k == 0:
                    return text
                return UUID.sub(lambda m: ids.get(m[0]) or ids.setdefault(m[0], str(uuid.uuid5(NS, f"{k}:{m[0]}"))), text)
            requests: list[AppendRequest] = []
            for row, when in zip(rows, times):  # whole copies only: a cut copy would leave a run open
                if k and row.type == "BaselineImported":
                    continue
                event = NewEvent(event_id=rename(row.event_id), type=row.type, schema_version=row.schema_version,
                                 occurred_at=utc_iso(when + (k - first) * shift), data=rename(row.data),
                                 correlation_id=rename(row.correlation_id), causation_id=rename(row.causation_id))
                stream = rename(row.stream)
                if requests and requests[-1].stream == stream:
                    requests[-1].events.append(event)
                else:
                    requests.append(AppendRequest(stream, [event]))
                written += 1
            store.recorder.append_many(requests)
            copies += 1
    return {"events": written, "template_events": len(rows), "copies": copies,
            "bytes": path.stat().st_size + _wal(path)}


def _wal(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def build_incidents(path: Path, rows: list, total: int) -> dict:
    texts = [json.loads(r.data)["raw_text"] for r in rows if r.type == "IncidentCaptured"]
    samples = sorted(SAMPLES.glob("*.log")) + sorted((SAMPLES / "real").glob("*.log"))
    texts += [p.read_text(encoding="utf-8", errors="replace") for p in samples]
    when = parse_utc(rows[0].occurred_at)
    with open_store(path, create=True, synchronous="OFF") as store:
        for start in range(0, total, 1000):
            batch = []
            for i in range(start, min(total, start + 1000)):
                incident = IncidentCaptured(incident_id=new_id(), deployment="chat",
                                            source=IncidentSource(kind="file", path="/var/log/vllm/chat.log"),
                                            raw_text=texts[i % len(texts)], fingerprint=f"sha256:{i:016x}")
                batch.append(Pending(event=incident, event_id=incident.incident_id, occurred_at=when,
                                     correlation_id=incident.incident_id))
            store.append("incidents", batch)
    return {"incidents": total, "distinct_texts": len(texts), "bytes": path.stat().st_size + _wal(path)}


CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[3])
mode, path = sys.argv[1], sys.argv[2]
# every mode's imports before the clock starts: the measure is the work, not the start-up
import sqlite3, msgspec
from selfheal import projections
from selfheal.eventstore import open_store
from selfheal.handlers.observer import diagnose
from selfheal.schemas.events import EVENT_TYPES
start = time.perf_counter()
out = {}
if mode == "replay":
    matched = n = 0
    with open_store(path) as store:
        for e in store.read(types=["IncidentCaptured"]):
            n += 1
            matched += diagnose(e.event.raw_text).primary is not None
    out = {"items": n, "with_primary_finding": matched}
elif mode == "rebuild":
    with open_store(path) as store:
        state = projections.rebuild(store)
    out = {"items": state["position"], "projections": sorted(state["projections"])}
else:
    decoders = {n: msgspec.json.Decoder(c) for n, c in EVENT_TYPES.items()}
    conn, after, counts, hits = sqlite3.connect(path), 0, {}, 0
    where = "AND type = 'IncidentCaptured'" if mode == "decode-incidents" else ""
    while True:
        rows = conn.execute(f"SELECT position, type, data FROM events WHERE position > ? {where} ORDER BY position LIMIT 1000",
                            (after,)).fetchall()
        for _, kind, data in rows:
            event = decoders[kind].decode(data)
            counts[kind] = counts.get(kind, 0) + 1
            if mode == "decode-incidents":
                hits += "CUDA out of memory" in event.raw_text
        if len(rows) < 1000:
            break
        after = rows[-1][0]
    out = {"items": sum(counts.values()), "literal_hits": hits} if mode == "decode-incidents" else {"items": sum(counts.values())}
out["seconds"] = time.perf_counter() - start
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def child(mode: str, path: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, mode, str(path), str(ROOT)], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{mode} child failed:\n{done.stderr}")
    return json.loads(done.stdout)


def best_of(runs: int, ours: str, base: str, path: Path) -> tuple[dict, dict]:
    """Each measurement `runs` times, ours and the baseline taking turns (so a busy spell of a
    shared machine falls on both), the fastest of each: a fresh process every time."""
    found: dict[str, dict] = {}
    for _ in range(max(1, runs)):
        for mode in (base, ours):
            result = child(mode, path)
            if mode not in found or result["seconds"] < found[mode]["seconds"]:
                found[mode] = result
    return found[ours], found[base]


def pair(ours: dict, base: dict) -> dict:
    return {"items": ours["items"], "ours_s": round(ours["seconds"], 2), "baseline_s": round(base["seconds"], 2),
            "ratio_time": round(ours["seconds"] / base["seconds"], 2) if base["seconds"] else None,
            "ours_peak_rss_mb": round(ours["peak_rss_mb"]), "baseline_peak_rss_mb": round(base["peak_rss_mb"]),
            "ours_per_s": round(ours["items"] / ours["seconds"]), "baseline_per_s": round(base["items"] / base["seconds"]),
            "ours_detail": {k: v for k, v in ours.items() if k not in ("items", "seconds", "peak_rss_mb")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds, not minutes)")
    parser.add_argument("--events", type=int, help="events in the big log (default 1,000,000)")
    parser.add_argument("--incidents", type=int, help="incidents replayed (default 10,000)")
    parser.add_argument("--runs", type=int, default=2, help="runs of each rebuild measurement, the fastest kept (default 2)")
    args = parser.parse_args()
    events = args.events or (20_000 if args.quick else 1_000_000)
    incidents = args.incidents or (500 if args.quick else 10_000)
    timings = {}
    with tempfile.TemporaryDirectory(prefix="selfheal-bench-") as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        rows = template(tmp / "template.db")
        big = build_big(tmp / "big.db", rows, events)
        logs = build_incidents(tmp / "incidents.db", rows, incidents)
        timings["build_s"] = round(time.perf_counter() - start, 1)
        result = {
            "machine": {"python": platform.python_version(), "sqlite": sqlite3.sqlite_version, "cpus": os.cpu_count(),
                        "platform": platform.platform()},
            "incident_log": logs,
            "replay": pair(child("replay", tmp / "incidents.db"), child("decode-incidents", tmp / "incidents.db")),
            "event_log": big,
            "rebuild": pair(*best_of(args.runs, "rebuild", "decode", tmp / "big.db")),
            "timings": timings,
        }
    # rebuilding every projection should cost about what a plain decode of the same log
    # costs (measured beside it, above); issue 2's figures for a one-projection rebuild of 1M
    # events (under 5 s, under 200 MB) are applied to every projection
    rebuild = result["rebuild"]
    result["targets"] = {
        "rebuild_at_most_1.5x_plain_decode": {"value": rebuild["ratio_time"],
                                              "met": rebuild["ratio_time"] is not None and rebuild["ratio_time"] <= 1.5},
        "rebuild_peak_rss_under_200MB (issue 2)": {"value": rebuild["ours_peak_rss_mb"],
                                                   "met": rebuild["ours_peak_rss_mb"] < 200},
        "rebuild_1M_under_5s (issue 2)": {"value": rebuild["ours_s"], "met": events >= 1_000_000 and rebuild["ours_s"] < 5},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
