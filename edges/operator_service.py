"""A long-running command as a service: selfheal's metrics (edges/metrics_server.py) where a
port is given, and systemd's notify protocol (edges/systemd_notify.py) where $NOTIFY_SOCKET
is set; nothing at all where neither is."""
from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator

from selfheal.edges.metrics_server import OperatorService, OperatorView
from selfheal.edges.metrics_server import log as events_log
from selfheal.edges.systemd_notify import Notifier
from selfheal.eventstore.store import Recorded, open_store


@contextlib.contextmanager
def serving(name: str, db: str | os.PathLike, *, synchronous: str, runs_handlers: bool,
            metrics_port: int | None, metrics_address: str = "127.0.0.1",
            summarize: Callable[[Recorded], str] | None = None) -> Iterator[None]:
    """Around the command `name`'s work on the log `db`: started before it, stopped after it
    however it ends. `summarize` gives an event's line in the log lines of each new event,
    which it also follows for where `--log-level info` (or debug) asks for them."""
    notifier = Notifier()
    if metrics_port is None and not notifier.enabled and not events_log.isEnabledFor(logging.INFO):
        yield
        return
    view = OperatorView(lambda: open_store(db, synchronous=synchronous), runs_handlers=runs_handlers,
                        on_progress=notifier.alive, summarize=summarize)
    service = OperatorService(view, port=metrics_port, address=metrics_address)
    service.start()
    served = f", metrics on {metrics_address}:{service.port}" if metrics_port is not None else ""
    notifier.start(f"selfheal {name}: watching {db}{served}")
    try:
        yield
    finally:
        notifier.stop(f"selfheal {name}: stopped")
        service.stop()
