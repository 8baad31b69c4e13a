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
- it decodes into the state types.

Snapshots live in their own table in the log file, outside the hash chain and outside the
append-only events table; `selfheal verify` does not cover them, and `selfheal rebuild`
never reads them. Only the handler runner writes them, every SNAPSHOT_EVERY events; read
commands never write to the log file.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import sqlite3
import sys

import msgspec

from selfheal.projections.base import View

#: fold at most this many events past the newest snapshot before writing another one
SNAPSHOT_EVERY = 1000

_TABLE = ("CREATE TABLE IF NOT EXISTS view_snapshots (key TEXT PRIMARY KEY, position INTEGER NOT NULL, "
          "hash TEXT NOT NULL, data BLOB NOT NULL)")


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


def _connection(view: View) -> sqlite3.Connection | None:
    return getattr(view.store.recorder, "connection", None)


def _hash_at(conn: sqlite3.Connection, position: int) -> str | None:
    row = conn.execute("SELECT hash FROM events WHERE position = ?", (position,)).fetchone()
    return row[0] if row else None


def restore(view: View) -> int:
    """Load the newest valid snapshot into a fresh view; returns its position (0: none used)."""
    conn, key = _connection(view), snapshot_key(view)
    if conn is None or key is None or view.position != 0:
        return 0
    try:
        row = conn.execute("SELECT position, hash, data FROM view_snapshots WHERE key = ?", (key,)).fetchone()
        if row is None or _hash_at(conn, row[0]) != row[1]:
            return 0
        parts = msgspec.msgpack.decode(row[2], type=dict[str, msgspec.Raw])
        states = {name: msgspec.msgpack.decode(parts[name], type=type(view.states[name]))
                  for name in view.projections}
    except (sqlite3.Error, msgspec.DecodeError, KeyError):
        return 0
    view.states, view.position = states, row[0]
    return row[0]


def save(view: View, every: int = SNAPSHOT_EVERY) -> bool:
    """Write the view's states as the snapshot, if `every` events were folded since the last one.

    A cache write that fails (a read-only file, a busy or full disk) is skipped, never raised:
    nothing depends on it."""
    conn, key = _connection(view), snapshot_key(view)
    if conn is None or key is None or view.position == 0:
        return False
    try:
        conn.execute(_TABLE)
        row = conn.execute("SELECT position FROM view_snapshots WHERE key = ?", (key,)).fetchone()
        if view.position - (row[0] if row else 0) < every:
            return False
        chain = _hash_at(conn, view.position)
        if chain is None:
            return False
        data = msgspec.msgpack.encode(view.states)  # read back per name as Raw, each into its own type
        with conn:  # sqlite3 opens and commits the transaction (the recorder runs in autocommit)
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM view_snapshots WHERE key != ?", (key,))  # retired fold code
            conn.execute("INSERT OR REPLACE INTO view_snapshots (key, position, hash, data) VALUES (?, ?, ?, ?)",
                         (key, view.position, chain, data))
    except sqlite3.Error:
        return False
    return True
