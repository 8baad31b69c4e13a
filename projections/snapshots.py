"""Snapshots of a view's projections: a cache beside the log, never a source of truth.

A process that starts on a long log would otherwise fold every event from position 1 before
it can handle a new incident (1.6 s at 100,000 events). A snapshot keeps every projection's
state at one position, so a new view folds only the events after it.

Trusting a cache is where event-sourced systems go wrong, so a snapshot is used only when
all of these hold, and otherwise ignored (the view folds from scratch, the same answer, slower):

- it was written by the same fold code: its key digests the source of every projection's
  module, so any change to a fold or a state type retires old snapshots without anyone
  having to remember to bump a version;
- it belongs to this log, as it stands: the hash-chain value of the event at its position
  must equal the log's, so a log copied, cut or rewritten under it does not match;
- it was written by selfheal for this log: a MAC (HMAC-SHA256) under the log's own random
  secret (`recorder.secret("snapshots")`, kept in the log's `keys` table beside the events,
  outside the hash chain) covers its key, position, chain hash and states, so a row edited
  or inserted without that secret (states emptied by hand, a row copied from another log, a
  tool or a bug writing the table) is never restored, whatever else it gets right;
- it decodes into the state types.

What the MAC does not stop: whoever can write the log file can also read its `keys` table,
and so sign a forged snapshot, as they can rewrite events and recompute the hash chain
(eventstore/hashing.py). Against them the log is tamper-evident at best, and only through a
head hash kept elsewhere; `selfheal rebuild` and `--as-of` fold from the events alone.

Snapshots live in their own table in the log file, outside the hash chain and outside the
append-only events table; `selfheal verify` does not cover them, and `selfheal rebuild`
never reads them. Only the handler runner writes them, every SNAPSHOT_EVERY events; read
commands never write to the log file (restoring one reads the secret, never makes it).
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import inspect
import sqlite3
import sys

import msgspec

from selfheal.eventstore.errors import StoreError
from selfheal.projections.base import View

#: fold at most this many events past the newest snapshot before writing another one
SNAPSHOT_EVERY = 1000

#: the log secret that signs snapshots; `data` is its MAC (_MAC bytes) followed by the states
SECRET = "snapshots"
_MAC = hashlib.sha256().digest_size


def snapshot_key(view: View) -> str | None:
    """A digest of the fold code behind `view` (None when some source cannot be read)."""
    return _digest(tuple(sorted((name, type(p).__module__) for name, p in view.projections.items())))


@functools.cache
def _digest(modules: tuple[tuple[str, str], ...]) -> str | None:
    # once per process: the loaded fold code cannot change under it, and reading and hashing
    # every module's source on each restore and save would be start-up and hot-path work
    digest = hashlib.sha256()
    for name, module_name in modules:
        try:
            source = inspect.getsource(sys.modules[module_name])
        except (OSError, TypeError, KeyError):
            return None
        digest.update(f"{name}\0{module_name}\0".encode())
        digest.update(source.encode())
    return digest.hexdigest()[:32]


def _recorder(view: View):
    """The view's recorder, if its backend keeps snapshots (SQLite, PostgreSQL: the recorder
    interface, so no backend switches them off by being another database)."""
    recorder = view.store.recorder
    return recorder if recorder.keeps_snapshots else None


def _mac(secret: bytes, key: str, position: int, chain: str, states: bytes) -> bytes:
    # the fields before the states hold no NUL, so the message has one reading
    message = b"\0".join((key.encode(), str(position).encode(), chain.encode(), states))
    return hmac.new(secret, message, hashlib.sha256).digest()


def _verified(recorder, key: str) -> tuple[int, bytes] | None:
    """(position, states) of the snapshot stored for `key`, if its MAC verifies and its chain
    hash is this log's at its position; None for anything else. The snapshot secret is read
    without being made (`stored_secret`): a read command never writes."""
    row = recorder.snapshot(key)
    if row is None:
        return None
    position, chain, data = row
    secret = recorder.stored_secret(SECRET)
    if secret is None or not isinstance(data, bytes) or not isinstance(position, int) or not isinstance(chain, str):
        return None
    mac, states = data[:_MAC], data[_MAC:]
    if not hmac.compare_digest(mac, _mac(secret, key, position, chain, states)) or recorder.hash_at(position) != chain:
        return None
    return position, states


def restore(view: View) -> int:
    """Load the newest valid snapshot into a fresh view; returns its position (0: none used)."""
    recorder, key = _recorder(view), snapshot_key(view)
    if recorder is None or key is None or view.position != 0:
        return 0
    try:
        found = _verified(recorder, key)
        if found is None:
            return 0
        position, data = found
        parts = msgspec.msgpack.decode(data, type=dict[str, msgspec.Raw])
        states = {name: msgspec.msgpack.decode(parts[name], type=type(view.states[name]))
                  for name in view.projections}
    except (sqlite3.Error, StoreError, msgspec.DecodeError, KeyError):
        return 0
    view.states, view.position = states, position
    return position


def save(view: View, every: int = SNAPSHOT_EVERY) -> bool:
    """Write the view's states as the snapshot, if `every` events were folded since the last one.

    A cache write that fails (a read-only file, a busy or full disk) is skipped, never raised:
    nothing depends on it."""
    recorder, key = _recorder(view), snapshot_key(view)
    if recorder is None or key is None or view.position == 0:
        return False
    try:
        row = recorder.snapshot(key)
        due = view.position - (row[0] if row else 0) >= every
        if not due and (row is None or _verified(recorder, key) is not None):
            return False  # a row that fails its checks holds nothing back: it is replaced
        chain = recorder.hash_at(view.position)
        if chain is None:
            return False
        states = msgspec.msgpack.encode(view.states)  # read back per name as Raw, each into its own type
        data = _mac(recorder.secret(SECRET), key, view.position, chain, states) + states
        recorder.save_snapshot(key, view.position, chain, data)
    except (sqlite3.Error, StoreError):
        return False
    return True
