"""Runner exclusion on a server log shared by a fleet: leases with fencing tokens.

On a file log runners take turns through a lock beside the file (handlers/runtime.py); a
server log has no file, and its runners live on several nodes.

A node's name is leased too (`node_claimed`), for as long as its runner runs: the log answers
per node (`history --node`), which is only true while one live runner writes under a name.
"""
from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Sequence

from selfheal.eventstore.errors import StoreError
from selfheal.eventstore.store import EventStore

#: (log, lease names) -> how many runners of this process hold them (runners nested in a test)
_held: dict[tuple, int] = {}

#: how long a runner's lease on a server log lasts unless renewed (every third of it, by a thread)
LEASE_TTL_S = float(os.environ.get("SELFHEAL_LEASE_TTL_S", "30"))


@contextlib.contextmanager
def leased(store: EventStore, names: Sequence[str]):
    """Runner exclusion on a server log: a lease per name (a deployment), with fencing.

    A flock cannot reach another node, and a session advisory lock does not survive a
    transaction-mode pooler; a lease row with a token does both. The runner waits for every
    lease, and the recorder then refuses any write of this runner once another holds one of
    them (eventstore/postgres.py `fence`), so a runner that stalled past its lease (a paused
    VM, a lost network) cannot record a canary start or a commit after a node took over. A
    thread renews the leases on a connection of its own; a killed runner stops renewing and
    its leases pass to the next runner after LEASE_TTL_S."""
    recorder = store.recorder
    holder = _holder(recorder)
    key = (recorder.url, tuple(names))
    if _held.get(key):  # runners nested in one process: the outer holds the leases
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    tokens: dict[str, int] = {}
    while len(tokens) < len(names):
        for name in names:
            token = recorder.acquire_lease(name, holder, LEASE_TTL_S)
            if token is None:
                tokens.clear()  # never hold some while waiting for others: two runners could deadlock
                for taken in [n for n in names if n != name]:
                    recorder.release_lease(taken, holder)
                time.sleep(0.2)
                break
            tokens[name] = token
    recorder.fence.update(tokens)
    stop = threading.Event()
    renewer = threading.Thread(target=_renew, args=(type(recorder)(recorder.url), names, holder, stop), daemon=True)
    renewer.start()
    _held[key] = 1
    try:
        yield
    finally:
        _held[key] = 0
        stop.set()
        renewer.join()
        for name in names:
            recorder.fence.pop(name, None)
            with contextlib.suppress(StoreError):
                recorder.release_lease(name, holder)


class NodeTaken(StoreError):
    """Another live runner runs under this node's name on the same log."""


def _holder(recorder) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{id(recorder):x}"


@contextlib.contextmanager
def node_claimed(store: EventStore, node: str):
    """One live runner per node name on a server log: the lease `node:NAME`, renewed by a
    thread while the runner runs, and fenced like a deployment's lease, so a runner that
    stalled past it and finds its name taken records nothing more.

    A second runner started under a live name is refused at once, naming the holder: two
    containers sharing a hostname, or two runners left at the default name on one host, would
    otherwise record their runs under one name and `history --node` would mix them. A runner
    that died frees its name after LEASE_TTL_S (a restart under systemd retries until then).
    A file log needs no claim: its runners take turns on one host."""
    recorder = store.recorder
    if not hasattr(recorder, "acquire_lease"):
        yield
        return
    name, holder = f"node:{node}", _holder(recorder)
    token = recorder.acquire_lease(name, holder, LEASE_TTL_S)
    if token is None:
        other = recorder.leases().get(name, ("another runner",))[0]
        host, _, rest = other.partition(":")
        who = f"process {rest.split(':')[0]} on host {host}" if rest else other
        raise NodeTaken(f"{recorder.where}: node {node!r} is already running ({who}): give each runner its own name "
                        f"(--node or $SELFHEAL_NODE), or stop the other; a runner that died frees its name within "
                        f"{LEASE_TTL_S:g} s")
    recorder.fence[name] = token
    stop = threading.Event()
    renewer = threading.Thread(target=_renew, args=(type(recorder)(recorder.url), [name], holder, stop), daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        recorder.fence.pop(name, None)
        with contextlib.suppress(StoreError):
            recorder.release_lease(name, holder)


def _renew(recorder, names: Sequence[str], holder: str, stop: threading.Event) -> None:
    with recorder:
        while not stop.wait(LEASE_TTL_S / 3):
            for name in names:
                with contextlib.suppress(StoreError):
                    recorder.acquire_lease(name, holder, LEASE_TTL_S)
