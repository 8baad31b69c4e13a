"""Event-store benchmark: selfheal's log against plain sqlite3 + msgspec, in the same run.

Prints one JSON object. Each figure sits beside a baseline measured here on the same
settings (WAL, the same synchronous mode, a table with the same columns and indexes but no
hash chain, triggers, idempotency or version checks), with the ratio ours / baseline.

    python bench/eventstore.py            # full sizes (1,000,000-event rebuild)
    python bench/eventstore.py --quick    # small sizes, for CI smoke runs
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from selfheal.eventstore import Pending, open_store  # noqa: E402
from selfheal.schemas.events import (  # noqa: E402
    EVENT_TYPES, CanaryCompleted, CanaryMeasurements, IncidentCaptured, IncidentSource, IntentArchived,
)

T0 = datetime(2026, 11, 24, 6, 0, tzinfo=timezone.utc)
LOG_LINE = ("(EngineCore_DP0 pid=4242) ERROR 11-24 06:55:12 [core.py:708] ValueError: Free memory on device "
            "cuda:0 (10.71/11.66 GiB) on startup is less than desired GPU memory utilization (0.9, 10.49 GiB).")


def sample(i: int):
    kind = i % 3
    if kind == 0:
        return IncidentCaptured(incident_id=f"inc-{i}", deployment="chat", source=IncidentSource(kind="file", path="/var/log/vllm.log"),
                                raw_text=LOG_LINE, fingerprint="sha256:0123456789abcdef")
    if kind == 1:
        return CanaryCompleted(run_id=f"run-{i}", candidate_id=f"c-{i}", canary_id=f"k-{i}", backend="sim", simulated=True,
                               measurements=CanaryMeasurements(started=True, passed_load=True, kv_cache_tokens=43392,
                                                               max_concurrency=1.32, throughput_tok_s=812.5,
                                                               latency_p50_ms=41.0, latency_p99_ms=97.5))
    return IntentArchived(intent_id=f"int-{i}", deployment="chat", outcome="promoted", run_id=f"run-{i}")


def pending(i: int) -> Pending:
    return Pending(event=sample(i), event_id=str(uuid.UUID(int=i)), occurred_at=T0, correlation_id=f"inc-{i - i % 3}")


# -- the baseline: plain sqlite3 + msgspec ----------------------------------------------------

BASELINE_SCHEMA = """
CREATE TABLE events (position INTEGER PRIMARY KEY, event_id TEXT NOT NULL, stream TEXT NOT NULL,
  version INTEGER NOT NULL, type TEXT NOT NULL, schema_version INTEGER NOT NULL, occurred_at TEXT NOT NULL,
  recorded_at TEXT NOT NULL, correlation_id TEXT, causation_id TEXT, data TEXT NOT NULL);
CREATE UNIQUE INDEX events_event_id ON events(event_id);
CREATE UNIQUE INDEX events_stream_version ON events(stream, version);
CREATE INDEX events_type ON events(type, position);
CREATE INDEX events_correlation ON events(correlation_id);
CREATE INDEX events_recorded_at ON events(recorded_at);
"""
_enc = msgspec.json.Encoder()


def baseline_db(path: Path, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.executescript(BASELINE_SCHEMA)
    return conn


def baseline_rows(items: list[Pending], stream: str, version: int = 0) -> list[tuple]:
    """What a plain writer does per event: encode the body, format the time, build the row."""
    rows = []
    for p in items:
        version += 1
        when = p.occurred_at.isoformat(timespec="microseconds")
        rows.append((p.event_id, stream, version, type(p.event).__name__, 1, when, when, p.correlation_id,
                     None, _enc.encode(p.event).decode()))
    return rows


INSERT = ("INSERT INTO events (event_id, stream, version, type, schema_version, occurred_at, recorded_at, "
          "correlation_id, causation_id, data) VALUES (?,?,?,?,?,?,?,?,?,?)")


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def ratio(ours: float, base: float) -> float:
    return round(ours / base, 3) if base else 0.0


def bench_single(tmp: Path, n: int, synchronous: str) -> dict:
    store = open_store(tmp / f"single-{synchronous}.db", create=True, synchronous=synchronous)
    items = [pending(i) for i in range(n)]
    ours = n / timed(lambda: [store.append(f"s-{i % 50}", [p]) for i, p in enumerate(items)])
    store.close()
    conn = baseline_db(tmp / f"single-base-{synchronous}.db", synchronous)

    def run():
        for i, p in enumerate(items):
            (row,) = baseline_rows([p], f"s-{i % 50}", i // 50)
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(INSERT, row)
            conn.execute("COMMIT")
    base = n / timed(run)
    conn.close()
    return {"events": n, "ours_per_s": round(ours), "baseline_per_s": round(base), "ratio": ratio(ours, base)}


def bench_batches(tmp: Path, n: int, synchronous: str = "FULL", batch: int = 1000) -> dict:
    store = open_store(tmp / "batch.db", create=True, synchronous=synchronous)
    batches = [[pending(i) for i in range(b, b + batch)] for b in range(0, n, batch)]
    ours = n / timed(lambda: [store.append(f"s-{k}", items) for k, items in enumerate(batches)])
    store.close()
    conn = baseline_db(tmp / "batch-base.db", synchronous)

    def run():
        for k, items in enumerate(batches):
            rows = baseline_rows(items, f"s-{k}")
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(INSERT, rows)
            conn.execute("COMMIT")
    base = n / timed(run)
    conn.close()
    return {"events": n, "batch": batch, "ours_per_s": round(ours), "baseline_per_s": round(base), "ratio": ratio(ours, base)}


def fill(path: Path, n: int) -> None:
    """A log of n events, written in batches (NORMAL sync: this is setup, not measurement)."""
    store = open_store(path, create=True, synchronous="NORMAL")
    for b in range(0, n, 5000):
        store.append(f"s-{b}", [pending(i) for i in range(b, min(n, b + 5000))])
    store.close()


def bench_reads(path: Path, n: int) -> dict:
    store = open_store(path)
    ours = n / timed(lambda: sum(1 for _ in store.read()))
    store.close()
    decoders = {name: msgspec.json.Decoder(cls) for name, cls in EVENT_TYPES.items()}
    conn = sqlite3.connect(path)

    def run():
        after = 0
        while True:
            rows = conn.execute("SELECT position, type, data FROM events WHERE position > ? ORDER BY position LIMIT 1000",
                                (after,)).fetchall()
            for _, kind, data in rows:
                decoders[kind].decode(data)
            if len(rows) < 1000:
                return
            after = rows[-1][0]
    base = n / timed(run)
    conn.close()
    return {"events": n, "ours_per_s": round(ours), "baseline_per_s": round(base), "ratio": ratio(ours, base)}


REBUILD_CHILD = """
import resource, sys, time, json
sys.path.insert(0, sys.argv[3])
mode, path = sys.argv[1], sys.argv[2]
start = time.perf_counter()
if mode == "ours":
    from selfheal.eventstore import open_store
    from selfheal.projections.base import rebuild
    from selfheal.projections.event_counts import EventCountsProjection
    state, _ = rebuild(open_store(path), EventCountsProjection())
    total = state.total
else:
    import sqlite3, msgspec
    from selfheal.schemas.events import EVENT_TYPES
    decoders = {n: msgspec.json.Decoder(c) for n, c in EVENT_TYPES.items()}
    conn, after, counts = sqlite3.connect(path), 0, {}
    while True:
        rows = conn.execute("SELECT position, type, data FROM events WHERE position > ? ORDER BY position LIMIT 1000", (after,)).fetchall()
        for _, kind, data in rows:
            decoders[kind].decode(data)
            counts[kind] = counts.get(kind, 0) + 1
        if len(rows) < 1000:
            break
        after = rows[-1][0]
    total = sum(counts.values())
elapsed = time.perf_counter() - start
print(json.dumps({"seconds": elapsed, "events": total, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def bench_rebuild(path: Path) -> dict:
    def child(mode):
        out = subprocess.run([sys.executable, "-c", REBUILD_CHILD, mode, str(path), str(ROOT)],
                             capture_output=True, text=True, check=True).stdout
        return json.loads(out)
    ours, base = child("ours"), child("baseline")
    return {"events": ours["events"], "ours_s": round(ours["seconds"], 2), "baseline_s": round(base["seconds"], 2),
            "ratio_speed": ratio(base["seconds"], ours["seconds"]),
            "ours_peak_rss_mb": round(ours["peak_rss_mb"]), "baseline_peak_rss_mb": round(base["peak_rss_mb"])}


def bytes_per_event(path: Path, n: int, tmp: Path) -> dict:
    base_path = tmp / "size-base.db"
    conn = baseline_db(base_path, "NORMAL")
    for b in range(0, n, 5000):
        conn.execute("BEGIN")
        conn.executemany(INSERT, baseline_rows([pending(i) for i in range(b, min(n, b + 5000))], f"s-{b}"))
        conn.execute("COMMIT")
    for c in (conn, sqlite3.connect(path)):
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        c.close()
    ours, base = path.stat().st_size / n, base_path.stat().st_size / n
    return {"ours": round(ours), "baseline": round(base), "ratio": ratio(ours, base)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds, not minutes)")
    args = parser.parse_args()
    single, batched, big = (200, 10_000, 20_000) if args.quick else (2_000, 200_000, 1_000_000)
    with tempfile.TemporaryDirectory(prefix="selfheal-bench-") as tmp:
        tmp = Path(tmp)
        result = {
            "machine": {"python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
                        "cpus": os.cpu_count(), "platform": platform.platform()},
            "single_append_full": bench_single(tmp, single, "FULL"),
            "single_append_normal": bench_single(tmp, single, "NORMAL"),
            "batched_append_full": bench_batches(tmp, batched),
        }
        log = tmp / "big.db"
        fill(log, big)
        result["typed_reads"] = bench_reads(log, big)
        result["rebuild"] = bench_rebuild(log)
        result["bytes_per_event"] = bytes_per_event(log, big, tmp)
        result["targets"] = {
            "batched_append_ratio>=0.8": result["batched_append_full"]["ratio"] >= 0.8,
            "single_append_ratio>=0.8": min(result["single_append_full"]["ratio"], result["single_append_normal"]["ratio"]) >= 0.8,
            "typed_reads_ratio>=0.5": result["typed_reads"]["ratio"] >= 0.5,
            "rebuild_1M_under_5s": big >= 1_000_000 and result["rebuild"]["ours_s"] < 5,
            "rebuild_peak_rss_under_200MB": result["rebuild"]["ours_peak_rss_mb"] < 200,
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
