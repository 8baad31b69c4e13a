"""Processes that share one log, for the contract's shared-log tests: `python -m
tests.eventstore.shared_procs append SPEC WRITER COUNT` appends COUNT events one at a time to
stream w<WRITER>, and every tenth time first tries an append with a stale expected version
(a write that is rolled back under the append lock, as a conflicting node's would be)."""
from __future__ import annotations

import sys

from selfheal.eventstore.errors import ConcurrencyError
from selfheal.eventstore.store import open_store
from tests.eventstore.contract import ev


def append(spec: str, writer: int, count: int) -> None:
    with open_store(spec) as store:
        recorder = store.recorder
        for i in range(count):
            if i % 10 == 9:
                try:
                    recorder.append(f"w{writer}", [ev(0, event_id=f"stale-{writer}-{i}")], expected_version=0)
                except ConcurrencyError:
                    pass
                else:
                    raise SystemExit("a stale expected version was accepted")
            recorder.append(f"w{writer}", [ev(i, event_id=f"w{writer}-{i}")])


if __name__ == "__main__":
    command, spec, *rest = sys.argv[1:]
    if command == "append":
        append(spec, int(rest[0]), int(rest[1]))
