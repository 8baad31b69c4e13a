"""PostgreSQL benchmark: selfheal's server recorder beside a plain psycopg insert loop and the
`eventsourcing` library's PostgreSQL recorder, in the same run, on a throwaway local cluster.

Prints one JSON object: events/s of each, and ratios ours / plain and ours / eventsourcing.
- appends, single: one event per transaction (what a runner's commit is);
- appends, batched: 100 events per transaction;
- the append lock: advisory transaction lock (ours) against LOCK TABLE ... EXCLUSIVE;
- typed reads: rows to msgspec Structs (ours: EventStore.read) against a plain SELECT decoded
  by the same msgspec decoder;
- fleet: 4 processes appending one event per transaction at once.
The plain loop has the same columns and indexes but no hash chain, no lock, no version check,
no idempotency. Commits are durable (fsync on) in every variant.

    python bench/postgres.py            # 5,000 events per figure
    python bench/postgres.py --quick    # 500, for CI smoke runs
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from selfheal.eventstore.postgres import PostgresRecorder  # noqa: E402
from selfheal.eventstore.recorder import COLUMNS, NewEvent  # noqa: E402
from selfheal.eventstore.store import EventStore  # noqa: E402
from selfheal.schemas.events import IntentArchived  # noqa: E402
from tests.eventstore.pgcluster import Cluster, binaries  # noqa: E402

BODY = msgspec.json.encode(IntentArchived(intent_id="i" * 36, deployment="chat", outcome="promoted")).decode()
PLAIN = ("CREATE TABLE plain (position BIGSERIAL PRIMARY KEY, event_id TEXT NOT NULL UNIQUE, stream TEXT NOT NULL, "
         "version INTEGER NOT NULL, type TEXT NOT NULL, schema_version INTEGER NOT NULL, occurred_at TEXT NOT NULL, "
         "recorded_at TEXT NOT NULL, correlation_id TEXT, causation_id TEXT, data TEXT NOT NULL, "
         "UNIQUE (stream, version)); CREATE INDEX plain_type ON plain (type, position)")
PLAIN_INSERT = ("INSERT INTO plain (event_id, stream, version, type, schema_version, occurred_at, recorded_at, "
                "correlation_id, causation_id, data) VALUES (%s, %s, %s, 'IntentArchived', 1, %s, %s, NULL, NULL, %s)")
NOW = "2026-11-24T06:00:00.000000Z"


def new_event() -> NewEvent:
    return NewEvent(event_id=str(uuid.uuid4()), type="IntentArchived", schema_version=1, occurred_at=NOW, data=BODY)


def rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1)


def ours_single(url: str, n: int, cls=PostgresRecorder) -> float:
    with cls(url, create=True) as rec:
        started = time.perf_counter()
        for i in range(n):
            rec.append(f"s{i % 50}", [new_event()])
        return rate(n, time.perf_counter() - started)


def ours_batched(url: str, n: int, size: int = 100) -> float:
    with PostgresRecorder(url, create=True) as rec:
        started = time.perf_counter()
        for i in range(0, n, size):
            rec.append(f"b{i % 50}", [new_event() for _ in range(size)])
        return rate(n, time.perf_counter() - started)


def plain_single(url: str, n: int) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(PLAIN)
        started = time.perf_counter()
        for i in range(n):
            conn.execute(PLAIN_INSERT, (str(uuid.uuid4()), f"s{i % 50}", i, NOW, NOW, BODY))
        return rate(n, time.perf_counter() - started)


def plain_batched(url: str, n: int, size: int = 100) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(PLAIN)
        started = time.perf_counter()
        for i in range(0, n, size):
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(PLAIN_INSERT, [(str(uuid.uuid4()), f"b{i}", j, NOW, NOW, BODY) for j in range(size)])
        return rate(n, time.perf_counter() - started)


def eventsourcing_recorder(url: str):
    from eventsourcing.persistence import StoredEvent
    from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore

    parts = psycopg.conninfo.conninfo_to_dict(url)
    datastore = PostgresDatastore(parts["dbname"], parts["host"], parts["port"], parts["user"], "")
    recorder = PostgresApplicationRecorder(datastore)
    recorder.create_table()
    return recorder, StoredEvent, datastore


def es_appends(url: str, n: int, size: int) -> float:
    recorder, StoredEvent, datastore = eventsourcing_recorder(url)
    streams = [uuid.uuid4() for _ in range(50)]
    versions = dict.fromkeys(streams, 0)
    state = BODY.encode()
    started = time.perf_counter()
    for i in range(0, n, size):
        stream = streams[(i // size) % 50]
        batch = []
        for _ in range(size):
            versions[stream] += 1
            batch.append(StoredEvent(stream, versions[stream], "IntentArchived", state))
        recorder.insert_events(batch)
    elapsed = time.perf_counter() - started
    datastore.close()
    return rate(n, elapsed)


def typed_reads(url: str, n: int) -> dict:
    with PostgresRecorder(url, create=True) as rec:
        for i in range(0, n, 500):
            rec.append(f"r{i}", [new_event() for _ in range(500)])
        store = EventStore(rec)
        started = time.perf_counter()
        count = sum(1 for _ in store.read())
        ours = rate(count, time.perf_counter() - started)
    decoder = msgspec.json.Decoder(IntentArchived)
    with psycopg.connect(url) as conn:
        started = time.perf_counter()
        rows = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM events ORDER BY position").fetchall()
        plain = rate(len([decoder.decode(r[COLUMNS.index('data')]) for r in rows]), time.perf_counter() - started)
    return {"ours_events_per_s": ours, "plain_select_decode_events_per_s": plain, "ratio_ours_plain": round(ours / plain, 3)}


def fleet(url: str, n: int, plain: bool) -> float:
    """4 node processes, each appending n/4 events one per transaction, at once."""
    if plain:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(PLAIN)
    else:
        PostgresRecorder(url, create=True).close()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    started = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, __file__, "--node", url, str(node), str(n // 4), "plain" if plain else "ours"],
                              env=env) for node in range(4)]
    for p in procs:
        assert p.wait() == 0
    return rate(n // 4 * 4, time.perf_counter() - started)


def node(url: str, number: int, count: int, kind: str) -> None:
    if kind == "plain":
        with psycopg.connect(url, autocommit=True) as conn:
            for i in range(count):
                conn.execute(PLAIN_INSERT, (str(uuid.uuid4()), f"n{number}", i, NOW, NOW, BODY))
        return
    with PostgresRecorder(url) as rec:
        for i in range(count):
            rec.append(f"n{number}", [new_event()])


class TableLocked(PostgresRecorder):
    APPEND_LOCK = "LOCK TABLE events IN EXCLUSIVE MODE"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--node", nargs=4)
    args = parser.parse_args()
    if args.node:
        node(args.node[0], int(args.node[1]), int(args.node[2]), args.node[3])
        return
    n = 500 if args.quick else 5000
    cluster = Cluster(binaries())
    cluster.start()
    try:
        db = cluster.new_database
        out: dict = {"events": n, "postgres": psycopg.connect(cluster.url()).info.server_version,
                     "fsync": "on, synchronous_commit on"}
        ours, plain = ours_single(db(), n), plain_single(db(), n)
        out["append_single"] = {"ours_events_per_s": ours, "plain_psycopg_events_per_s": plain,
                                "ratio_ours_plain": round(ours / plain, 3)}
        ours_b, plain_b = ours_batched(db(), n), plain_batched(db(), n)
        out["append_batched_100"] = {"ours_events_per_s": ours_b, "plain_psycopg_events_per_s": plain_b,
                                     "ratio_ours_plain": round(ours_b / plain_b, 3)}
        table = ours_single(db(), n, TableLocked)
        out["append_lock"] = {"advisory_xact_lock_events_per_s": ours, "lock_table_exclusive_events_per_s": table,
                              "ratio_advisory_table": round(ours / table, 3)}
        try:
            es_single, es_batched = es_appends(db(), n, 1), es_appends(db(), n, 100)
        except ImportError as exc:
            out["eventsourcing"] = f"not installed ({exc}): pip install 'eventsourcing[postgres]' to compare"
        else:
            out["eventsourcing"] = {
                "single_events_per_s": es_single, "batched_100_events_per_s": es_batched,
                "ratio_ours_single": round(ours / es_single, 3), "ratio_ours_batched": round(ours_b / es_batched, 3)}
        out["typed_reads"] = typed_reads(db(), n)
        fleet_ours, fleet_plain = fleet(db(), n, plain=False), fleet(db(), n, plain=True)
        out["fleet_4_nodes"] = {"ours_events_per_s": fleet_ours, "plain_psycopg_events_per_s": fleet_plain,
                                "ratio_ours_plain": round(fleet_ours / fleet_plain, 3)}
    finally:
        cluster.stop()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
