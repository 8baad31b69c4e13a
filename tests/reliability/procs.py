"""Child processes for the concurrency tests (real, separate interpreters on one SQLite file).

    python -m tests.reliability.procs append PATH WRITER COUNT SEED
    python -m tests.reliability.procs run PATH EXPECTED_INPUTS TIMEOUT_S

`append` writes COUNT typed events (IntentArchived) with ids `w<WRITER>-<i>`, in the writer's
order i = 0..COUNT-1, mixing every way the store appends: one event at a time to the writer's
own streams (with optimistic concurrency: expected_version), one at a time to a stream
shared by every writer (no expected version), batches to one stream, and `append_many`
transactions that span the writer's stream and the shared one.

`run` is the fifth process: it reads and handles while the writers write. It checks that
every read shows a gap-free prefix of the log (never position N+1 before N), and that after
each `run_until_idle` the handler's checkpoint is the position of the last event the runner
examined. It stops once it has handled EXPECTED_INPUTS events and prints a JSON summary.
"""
from __future__ import annotations

import json
import random
import sys
import time
import uuid

from selfheal.eventstore import Pending, open_store
from selfheal.handlers.runtime import Reactor, Runner
from selfheal.schemas.events import IntentArchived, IntentDeduplicated
from tests.conftest import T0

SHARED = "shared"
OUT = "out"


def archived(writer: int, i: int) -> Pending:
    return Pending(event=IntentArchived(intent_id=f"{writer}-{i}", deployment=f"w{writer}", outcome="promoted"),
                   event_id=f"w{writer}-{i}", occurred_at=T0)


def own(writer: int, i: int) -> str:
    return f"w{writer}-s{i % 5}"


def append(path: str, writer: int, count: int, seed: int) -> None:
    rng = random.Random(seed)
    store = open_store(path)
    versions: dict[str, int] = {}   # the writer's own streams: nobody else writes them
    i = 0
    while i < count:
        mode = rng.random()
        if mode < 0.10:       # one event, own stream, optimistic concurrency
            stream = own(writer, i)
            store.append(stream, [archived(writer, i)], expected_version=versions.get(stream, 0))
            versions[stream] = versions.get(stream, 0) + 1
            i += 1
        elif mode < 0.20:     # one event, the shared stream, whatever version it is at
            store.append(SHARED, [archived(writer, i)])
            i += 1
        elif mode < 0.60:     # a batch to one of the writer's streams
            n = min(count - i, rng.randint(2, 60))
            stream = own(writer, i)
            store.append(stream, [archived(writer, i + k) for k in range(n)])
            versions[stream] = versions.get(stream, 0) + n
            i += n
        else:                 # one transaction over the writer's stream and the shared one
            n = min(count - i, rng.randint(2, 60))
            split = rng.randint(1, n)
            stream = own(writer, i)
            batches = [(stream, [archived(writer, i + k) for k in range(split)])]
            if n > split:
                batches.append((SHARED, [archived(writer, i + k) for k in range(split, n)]))
            store.append_many(batches)
            versions[stream] = versions.get(stream, 0) + split
            i += n
    store.close()


class Stamp(Reactor):
    """One output per input, with a RANDOM id: a second handling of an input would show as a
    second output instead of being absorbed by idempotent appends."""

    name = "stamp"
    subscribes_to = (IntentArchived,)
    emits = (IntentDeduplicated,)

    def react(self, event, view):
        out = IntentDeduplicated(intent_id=event.event.intent_id, incident_id=event.event_id,
                                 fingerprint="f", window_s=0)
        return [(OUT, Pending(event=out, event_id=str(uuid.uuid4()), occurred_at=event.occurred,
                              causation_id=event.event_id))]


def run(path: str, expected: int, timeout_s: float) -> None:
    store = open_store(path)
    runner = Runner(store, [Stamp()], page=200)
    seen = 0          # the reader's own cursor: every read must continue the prefix it has seen
    handled = conflicts = rounds = reads = 0
    last = 0
    deadline = time.monotonic() + timeout_s

    def read_on(seen: int) -> int:
        for row in store.recorder.read(seen):
            if row.position != seen + 1:
                raise SystemExit(f"reader saw position {row.position} right after {seen}: a gap")
            seen = row.position
        return seen

    while True:
        seen = read_on(seen)
        reads += 1
        report = runner.run_until_idle()
        rounds += 1
        handled += report.handled
        conflicts += report.conflicts
        if report.position:
            last = report.position
            checkpoint = store.recorder.checkpoint("stamp")
            if checkpoint != report.position:
                raise SystemExit(f"checkpoint {checkpoint} != last examined position {report.position}")
        if handled >= expected:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out with {handled} of {expected} handled")
        time.sleep(0.01)
    seen = read_on(seen)
    print(json.dumps({"handled": handled, "conflicts": conflicts, "rounds": rounds, "reads": reads,
                      "last_examined": last, "checkpoint": store.recorder.checkpoint("stamp"),
                      "seen": seen}), flush=True)
    store.close()


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "append":
        append(args[0], int(args[1]), int(args[2]), int(args[3]))
    elif command == "run":
        run(args[0], int(args[1]), float(args[2]))
    else:
        raise SystemExit(f"unknown command {command!r}")
