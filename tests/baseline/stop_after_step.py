"""Run `selfheal ARGS...` and freeze it (SIGSTOP) right after the log has durably recorded an
event of type STEP: `python stop_after_step.py STEP ARGS...`.

A test then SIGKILLs the frozen process, so the kill lands exactly between two steps of a
commit, whatever the machine's speed. Polling the log from outside cannot promise that: on a
slow machine the next step is often recorded before the poller looks again.
"""
from __future__ import annotations

import os
import signal
import sys

from selfheal.cli.main import main
from selfheal.eventstore.sqlite import SQLiteRecorder


def freeze_after(step: str) -> None:
    original = SQLiteRecorder.append_many

    def append_many(self, requests, checkpoints=()):
        positions = original(self, requests, checkpoints)  # committed: the step is in the log
        if any(event.type == step for request in requests for event in request.events):
            os.kill(os.getpid(), signal.SIGSTOP)
        return positions

    SQLiteRecorder.append_many = append_many


if __name__ == "__main__":
    freeze_after(sys.argv[1])
    sys.argv = ["selfheal", *sys.argv[2:]]
    main()
