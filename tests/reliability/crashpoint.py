"""Run the selfheal CLI with a SIGKILL armed at one chosen point: the crash-anywhere harness's
process. Nothing in selfheal itself knows about it; this module wraps a few functions at
the edges before handing over to `cli.main`, and the process kills itself with SIGKILL (no
handler, no cleanup, no flush) when the chosen point is reached.

    python -m tests.reliability.crashpoint SPEC -- SELFHEAL ARGS...

SPEC is `WHERE:N` (the N-th time the process gets there) or `count`:

- `after-commit:N`   just after the N-th transaction of the log committed (an event boundary);
- `before-commit:N`  just before the N-th transaction starts: the handler's effect (a canary,
                     a config write, a reload) has happened, its record is not yet written;
- `in-canary:N`      inside the N-th canary, while its server is up and the load phase starts;
- `in-replace:N`     inside a config write, just before its N-th rename (the first rename of a
                     commit moves `.previous`, the second puts the new file in place);
- `in-reload:N`      while the N-th restart command runs (the command outlives us);
- `count`            no kill: writes {"reached": {"commit": C, "canary": .., ...}, "commits":
                     [{"types": [...], "handler": H}, ...]} (how often each point was reached,
                     and what each transaction appended) as JSON to $CRASHPOINT_COUNTS at exit.

Every rename a config write makes is journalled (the target's file name, one line) to
$CRASHPOINT_JOURNAL when it is set, so writes are counted by what happened, not by the log.
"""
from __future__ import annotations

import atexit
import json
import os
import signal
import sys
import threading
import time
from collections import Counter

POINTS = ("after-commit", "before-commit", "in-canary", "in-replace", "in-reload")
reached: Counter = Counter()
commits: list[dict] = []


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # SIGKILL is asynchronous in theory; never run past the point


def arm(spec: str) -> None:
    where, _, n = spec.partition(":")
    target = int(n) if n else 0
    if where not in POINTS + ("count",):
        raise SystemExit(f"crashpoint: unknown point {where!r}; one of {', '.join(POINTS)} or count")

    def at(point: str) -> None:
        reached[point] += 1
        if point == where and reached[point] == target:
            _die()

    from selfheal.eventstore.sqlite import SQLiteRecorder

    original_append_many = SQLiteRecorder.append_many

    def append_many(self, requests, checkpoints=()):
        n = reached["commit"] + 1  # before-commit:N and after-commit:N name the same transaction
        if where == "before-commit" and n == target:
            _die()
        result = original_append_many(self, requests, checkpoints)
        reached["commit"] = n
        # the runner puts the move of the handler whose output this is first; a transaction
        # with no events only catches up checkpoints, and belongs to no handler
        types = [e.type for r in requests for e in r.events]
        commits.append({"types": types, "handler": checkpoints[0].handler if checkpoints and types else None})
        if where == "after-commit" and n == target:
            _die()
        return result

    SQLiteRecorder.append_many = append_many

    import selfheal.edges.vllm_backend as backend

    original_load = backend.run_load

    def run_load(*args, **kwargs):
        at("canary")
        if where == "in-canary" and reached["canary"] == target:
            _die()
        return original_load(*args, **kwargs)

    backend.run_load = run_load

    import selfheal.edges.vllm_config as vllm_config

    journal = os.environ.get("CRASHPOINT_JOURNAL")

    class _Os:
        """`os` as edges.vllm_config sees it, with a kill point in front of each rename."""

        def __getattr__(self, name):
            return getattr(os, name)

        @staticmethod
        def replace(src, dst):
            at("replace")
            if where == "in-replace" and reached["replace"] == target:
                _die()
            os.replace(src, dst)
            if journal:  # no kill point lies between the rename and this line
                with open(journal, "a") as f:
                    f.write(f"{os.path.basename(dst)}\n")

    vllm_config.os = _Os()

    import selfheal.edges.reload as reload

    original_restart = reload.reload_restart

    def reload_restart(*args, **kwargs):
        at("reload")
        if where == "in-reload" and reached["reload"] == target:
            threading.Timer(0.15, _die).start()  # the command is running by then
        return original_restart(*args, **kwargs)

    reload.reload_restart = reload_restart

    out = os.environ.get("CRASHPOINT_COUNTS")
    if where == "count" and out:
        atexit.register(lambda: open(out, "w").write(json.dumps({"reached": dict(reached), "commits": commits})))


def main() -> None:
    args = sys.argv[1:]
    if len(args) < 2 or args[1] != "--":
        raise SystemExit(__doc__)
    arm(args[0])
    from selfheal.cli.main import cli

    sys.argv = ["selfheal", *args[2:]]
    cli(prog_name="selfheal")


if __name__ == "__main__":
    main()
