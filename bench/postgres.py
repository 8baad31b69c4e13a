"""PostgreSQL benchmark: selfheal's server recorder beside a plain psycopg insert loop and the
`eventsourcing` library's PostgreSQL recorder, in the same run, on a throwaway local cluster.

Prints one JSON object: events/s of each, and ratios ours / plain and ours / eventsourcing.
- appends, single: one event per transaction, no lease (an observation; one INSERT, from the
  head this recorder wrote last: eventstore/postgres_single.py);
- a runner's commit: one event and a checkpoint move per transaction, under a lease's fence
  (one INSERT too, its checks and the move in the same statement), against a plain transaction
  doing the same: BEGIN, the INSERT, an UPDATE of a checkpoint row, COMMIT (four round trips to
  our one: that is how a plain psycopg transaction goes, without pipeline mode);
- appends, batched: 100 events per transaction;
- the append lock: advisory transaction lock (ours) against LOCK TABLE ... EXCLUSIVE, both taken
  in the append function (one event skips it: postgres_schema.one_event, next_event);
- typed reads: rows to msgspec Structs (ours: EventStore.read) against a plain SELECT decoded
  by the same msgspec decoder;
- fleet: 4 processes appending one event per transaction at once, durable and without the
  flush; the clock runs from the moment all 4 are connected (their start-up was timed before,
  which pulled the ratio toward 1 in the slower variant's favour). Each of our appends holds
  the append lock until its commit is flushed (positions without gaps, a reader that never skips
  a row), so 4 nodes' commits flush one after another, where the plain inserts' commits share
  one flush (group commit): on a disk whose flush takes milliseconds ours is bounded by one
  flush an append. Without the flush it is the work under the lock that bounds it.
The plain loop: one psycopg connection in autocommit, one cursor's `execute(INSERT ...)` per row
(psycopg prepares the statement after its fifth run), into a table with the log's columns and
its six indexes, made from the log's own DDL, position from a sequence, recorded_at and a
64-character hash sent as constants; no hash chain, no lock, no version check, no idempotency.
(Before, its table had four of these six indexes and no hash column: unfair against ours, by
1-4% in a same-run measure; its constant recorded_at still costs its index about 1 us a row
less than ours, whose recorded_at differ row to row.) Ours goes through libpq's prepared
execution (postgres_single.Prepared), not a cursor, whose execute costs about 10 us of Python a
call: a path the plain loop could take too, so `append_single_no_flush` also races the plain
loop on that path (`plain_libpq`): the ratio to it is the cost of the log's guarantees alone.
Commits are durable (fsync on) in every variant; `append_single_no_flush` is
the same race with synchronous_commit off in every variant: the work of an append without the
WAL flush, which on a slow or busy disk is most of a commit and hides everything else.
The variants of one figure run interleaved, in rounds that rotate their order, each on its own
connection and fresh database, so a disk or a neighbour that slows down mid-run slows them all
alike and the ratios stay fair. 250 rounds (10, then 50 before): on a shared 2-core machine whose
load and disk change within seconds (a durable commit took 0.2 to 4 ms from one minute to the
next), rounds of 1,000 calls left one variant a slow stretch the other missed, and single appends
read 0.78-1.35x plain from run to run; rounds of 100 still read 0.73-0.99x in four same-cluster
races where rounds of 20 read 0.84-0.98x. A batch figure has one call a round.

    python bench/postgres.py            # 5,000 events per figure
    python bench/postgres.py --quick    # 500, for CI smoke runs
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
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

from selfheal.eventstore import postgres_schema as schema  # noqa: E402
from selfheal.eventstore.postgres import PostgresRecorder  # noqa: E402
from selfheal.eventstore.postgres_single import Prepared  # noqa: E402
from selfheal.eventstore.recorder import COLUMNS, AppendRequest, CheckpointAdvance, NewEvent  # noqa: E402
from selfheal.eventstore.store import EventStore  # noqa: E402
from selfheal.schemas.events import IntentArchived  # noqa: E402
from tests.eventstore.pgcluster import Cluster, binaries  # noqa: E402

BODY = msgspec.json.encode(IntentArchived(intent_id="i" * 36, deployment="chat", outcome="promoted")).decode()
#: the plain loop's table is the log's: the same columns (a hash too) and the same six indexes, made
#: from the log's own DDL; no triggers (they refuse UPDATE, DELETE and TRUNCATE, never an INSERT)
PLAIN = "; ".join(statement.replace("CREATE TABLE events", "CREATE TABLE plain").replace(
    "position BIGINT PRIMARY KEY", "position BIGSERIAL PRIMARY KEY").replace("INDEX events_", "INDEX plain_").replace(
    " ON events ", " ON plain ") for statement in schema.SCHEMA
    if statement.startswith(("CREATE TABLE events", "CREATE INDEX events_")))
PLAIN_INSERT = ("INSERT INTO plain (event_id, stream, version, type, schema_version, occurred_at, recorded_at, "
                "correlation_id, causation_id, data, hash) VALUES (%s, %s, %s, 'IntentArchived', 1, %s, %s, NULL, NULL, "
                f"%s, '{hashlib.sha256(b'plain').hexdigest()}')")
NOW = "2026-11-24T06:00:00.000000Z"
#: rounds a figure's calls are split into (see the docstring)
ROUNDS = 250


def new_event() -> NewEvent:
    return NewEvent(event_id=str(uuid.uuid4()), type="IntentArchived", schema_version=1, occurred_at=NOW, data=BODY)


def rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1)


def interleaved(variants: dict, n: int, per_call: int = 1, rounds: int = ROUNDS) -> dict[str, float]:
    """events/s of each variant, `variant(i)` appending call i (`per_call` events); the calls run
    in rounds, each round every variant in turn, the order rotating from round to round."""
    rounds = min(rounds, n // per_call)  # batches: one call a round
    spent, names, chunk = dict.fromkeys(variants, 0.0), list(variants), max(1, n // per_call // rounds)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            call = variants[name]
            started = time.perf_counter()
            for i in range(r * chunk, (r + 1) * chunk):
                call(i)
            spent[name] += time.perf_counter() - started
    return {name: rate(chunk * rounds * per_call, seconds) for name, seconds in spent.items()}


def ours(stack, url: str, size: int = 1, cls=PostgresRecorder, flush: bool = True):
    rec = stack.enter_context(cls(url, create=True))
    if not flush:
        rec._conn.execute("SET synchronous_commit = off")
    return lambda i: rec.append(f"s{i % 50}", [new_event() for _ in range(size)])


def plain(stack, url: str, size: int = 1, flush: bool = True):
    conn = stack.enter_context(psycopg.connect(url, autocommit=True))
    conn.execute(PLAIN)
    if not flush:
        conn.execute("SET synchronous_commit = off")
    cur = conn.cursor()
    if size == 1:
        return lambda i: cur.execute(PLAIN_INSERT, (str(uuid.uuid4()), f"s{i % 50}", i, NOW, NOW, BODY))

    def batch(i: int) -> None:
        with conn.transaction():
            cur.executemany(PLAIN_INSERT, [(str(uuid.uuid4()), f"b{i}", j, NOW, NOW, BODY) for j in range(size)])
    return batch


def plain_libpq(stack, url: str, flush: bool = True):
    """The plain loop through libpq's prepared execution (postgres_single.Prepared), the driver path
    ours takes, not psycopg's cursor: what the path alone is worth, beside the plain loop."""
    conn = stack.enter_context(psycopg.connect(url, autocommit=True))
    conn.execute(PLAIN)
    if not flush:
        conn.execute("SET synchronous_commit = off")
    run = Prepared(conn).run
    return lambda i: run(PLAIN_INSERT, (str(uuid.uuid4()), f"s{i % 50}", i, NOW, NOW, BODY))


def eventsourcing_recorder(url: str):
    from eventsourcing.persistence import StoredEvent
    from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore

    parts = psycopg.conninfo.conninfo_to_dict(url)
    datastore = PostgresDatastore(parts["dbname"], parts["host"], parts["port"], parts["user"], "")
    recorder = PostgresApplicationRecorder(datastore)
    recorder.create_table()
    return recorder, StoredEvent, datastore


def eventsourcing(stack, url: str, size: int = 1):
    recorder, StoredEvent, datastore = eventsourcing_recorder(url)
    stack.callback(datastore.close)
    streams = [uuid.uuid4() for _ in range(50)]
    versions = dict.fromkeys(streams, 0)
    state = BODY.encode()

    def call(i: int) -> None:
        stream = streams[i % 50]
        batch = []
        for _ in range(size):
            versions[stream] += 1
            batch.append(StoredEvent(stream, versions[stream], "IntentArchived", state))
        recorder.insert_events(batch)
    return call


def race(db, n: int, size: int = 1, flush: bool = True, lock: bool = False) -> dict[str, float]:
    """ours, plain (and eventsourcing where installed) interleaved: events/s of each."""
    with contextlib.ExitStack() as stack:
        if lock:  # both through the append function: the locks compared, nothing else
            variants = {"ours": ours(stack, db(), size, cls=InFunction), "table_lock": ours(stack, db(), size, cls=TableLocked)}
            return interleaved(variants, n, per_call=size)
        variants = {"ours": ours(stack, db(), size, flush=flush)}
        variants["plain"] = plain(stack, db(), size, flush=flush)
        if not flush:
            variants["plain_libpq"] = plain_libpq(stack, db(), flush=flush)
        if flush:  # eventsourcing's pool opens connections of its own: no session setting reaches them
            try:
                variants["eventsourcing"] = eventsourcing(stack, db(), size)
            except ImportError:
                pass
        return interleaved(variants, n, per_call=size)


def commits(db, n: int) -> dict[str, float]:
    """A runner's commit, ours and plain, interleaved: events/s of each."""
    with contextlib.ExitStack() as stack:
        rec = stack.enter_context(PostgresRecorder(db(), create=True))
        rec.fence["deployment:bench"] = rec.acquire_lease("deployment:bench", "bench", 3600)
        conn = stack.enter_context(psycopg.connect(db(), autocommit=True))
        conn.execute(PLAIN)
        conn.execute("CREATE TABLE plain_checkpoints (handler TEXT PRIMARY KEY, position BIGINT NOT NULL); "
                     "INSERT INTO plain_checkpoints VALUES ('h', 0)")
        cur = conn.cursor()

        def ours_commit(i: int) -> None:
            rec.append_many([AppendRequest(f"s{i % 50}", [new_event()])], [CheckpointAdvance("h", i, i + 1)])

        def plain_commit(i: int) -> None:
            with conn.transaction():
                cur.execute(PLAIN_INSERT, (str(uuid.uuid4()), f"s{i % 50}", i, NOW, NOW, BODY))
                cur.execute("UPDATE plain_checkpoints SET position = %s WHERE handler = 'h'", (i + 1,))
        # the checkpoint moves from i to i + 1: each variant's calls must run in order, once each
        spent = {"ours": 0.0, "plain": 0.0}
        rounds, chunk = ROUNDS, n // ROUNDS
        for r in range(rounds):
            for name, call in (("ours", ours_commit), ("plain", plain_commit))[::1 if r % 2 else -1]:
                started = time.perf_counter()
                for i in range(r * chunk, (r + 1) * chunk):
                    call(i)
                spent[name] += time.perf_counter() - started
        return {name: rate(chunk * rounds, seconds) for name, seconds in spent.items()}


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


def fleet(url: str, n: int, plain: bool, flush: bool = True) -> float:
    """4 node processes, each appending n/4 events one per transaction, at once. The clock runs
    from the moment all 4 are connected and ready to the last one's exit: process start-up and
    imports (a second or more on a loaded machine) are no part of either variant's figure (they
    were, which pulled the ratio toward 1, in the slower variant's favour)."""
    if plain:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(PLAIN)
    else:
        PostgresRecorder(url, create=True).close()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    kind = ("plain" if plain else "ours") + ("" if flush else "_no_flush")
    procs = [subprocess.Popen([sys.executable, __file__, "--node", url, str(node), str(n // 4), kind],
                              env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE) for node in range(4)]
    for p in procs:
        assert p.stdout.readline() == b"ready\n"
    started = time.perf_counter()
    for p in procs:
        p.stdin.write(b"go\n")
        p.stdin.flush()
    for p in procs:
        assert p.wait() == 0
    return rate(n // 4 * 4, time.perf_counter() - started)


def node(url: str, number: int, count: int, kind: str) -> None:
    def ready() -> None:  # connected: wait for the others (fleet)
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        sys.stdin.readline()
    flush = not kind.endswith("_no_flush")
    if kind.startswith("plain"):
        with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
            if not flush:
                conn.execute("SET synchronous_commit = off")
            ready()
            for i in range(count):
                cur.execute(PLAIN_INSERT, (str(uuid.uuid4()), f"n{number}", i, NOW, NOW, BODY))
        return
    with PostgresRecorder(url) as rec:
        if not flush:
            rec._conn.execute("SET synchronous_commit = off")
        ready()
        for i in range(count):
            rec.append(f"n{number}", [new_event()])


class InFunction(PostgresRecorder):
    ONE_STATEMENT = False  # one event through the append function too, as a batch goes


class TableLocked(InFunction):
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
        single, batched = race(db, n), race(db, n, size=100)
        out["append_single"] = {"ours_events_per_s": single["ours"], "plain_psycopg_events_per_s": single["plain"],
                                "ratio_ours_plain": round(single["ours"] / single["plain"], 3)}
        out["append_batched_100"] = {"ours_events_per_s": batched["ours"],
                                     "plain_psycopg_events_per_s": batched["plain"],
                                     "ratio_ours_plain": round(batched["ours"] / batched["plain"], 3)}
        commit = commits(db, n)
        out["append_runner_commit"] = {"ours_events_per_s": commit["ours"], "plain_psycopg_events_per_s": commit["plain"],
                                       "ratio_ours_plain": round(commit["ours"] / commit["plain"], 3)}
        unflushed = race(db, n, flush=False)
        out["append_single_no_flush"] = {
            "ours_events_per_s": unflushed["ours"], "plain_psycopg_events_per_s": unflushed["plain"],
            "ratio_ours_plain": round(unflushed["ours"] / unflushed["plain"], 3),
            "plain_libpq_events_per_s": unflushed["plain_libpq"],
            "ratio_ours_plain_libpq": round(unflushed["ours"] / unflushed["plain_libpq"], 3)}
        locks = race(db, n, lock=True)
        out["append_lock"] = {"advisory_xact_lock_events_per_s": locks["ours"],
                              "lock_table_exclusive_events_per_s": locks["table_lock"],
                              "ratio_advisory_table": round(locks["ours"] / locks["table_lock"], 3)}
        if "eventsourcing" in single:
            out["eventsourcing"] = {
                "single_events_per_s": single["eventsourcing"], "batched_100_events_per_s": batched["eventsourcing"],
                "ratio_ours_single": round(single["ours"] / single["eventsourcing"], 3),
                "ratio_ours_batched": round(batched["ours"] / batched["eventsourcing"], 3)}
        else:
            out["eventsourcing"] = "not installed: pip install 'eventsourcing[postgres]' to compare"
        out["typed_reads"] = typed_reads(db(), n)
        # ours, plain, plain, ours: a disk slowing down mid-run weighs on both alike
        runs = [fleet(db(), n // 2, plain=kind) for kind in (False, True, True, False)]
        fleet_ours, fleet_plain = (round(2 / (1 / runs[0] + 1 / runs[3]), 1),
                                   round(2 / (1 / runs[1] + 1 / runs[2]), 1))
        out["fleet_4_nodes"] = {"ours_events_per_s": fleet_ours, "plain_psycopg_events_per_s": fleet_plain,
                                "ratio_ours_plain": round(fleet_ours / fleet_plain, 3)}
        # without the flush a run of n // 2 lasts a few tenths of a second: too short to be steady
        runs = [fleet(db(), n * 2, plain=kind, flush=False) for kind in (False, True, True, False)]
        fleet_ours, fleet_plain = (round(2 / (1 / runs[0] + 1 / runs[3]), 1),
                                   round(2 / (1 / runs[1] + 1 / runs[2]), 1))
        out["fleet_4_nodes_no_flush"] = {"ours_events_per_s": fleet_ours, "plain_psycopg_events_per_s": fleet_plain,
                                         "ratio_ours_plain": round(fleet_ours / fleet_plain, 3)}
    finally:
        cluster.stop()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
