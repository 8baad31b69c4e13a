"""A runner process for the crash tests: handles every IntentArchived on stream `in`
by emitting one IntentDeduplicated with a RANDOM id, so a second handling of the same
input would show as a second output instead of being swallowed by idempotent appends."""
from __future__ import annotations

import sys
import time
import uuid

from selfheal.eventstore import Pending, open_store
from selfheal.handlers.runtime import Reactor, Runner
from selfheal.schemas.events import IntentArchived, IntentDeduplicated


class Stamp(Reactor):
    name = "stamp"
    subscribes_to = (IntentArchived,)
    emits = (IntentDeduplicated,)

    def __init__(self, delay: float):
        self.delay = delay

    def react(self, event, view):
        if event.stream != "in":
            return ()
        time.sleep(self.delay)  # widen the window between handling and committing
        out = IntentDeduplicated(intent_id=event.event.intent_id, incident_id=event.event_id,
                                 fingerprint="f", window_s=0)
        return [("out", Pending(event=out, event_id=str(uuid.uuid4()), occurred_at=event.occurred,
                                causation_id=event.event_id))]


def main(path: str, delay: float) -> None:
    store = open_store(path)
    print("ready", flush=True)
    Runner(store, [Stamp(delay)], page=7).run_until_idle()


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]))
