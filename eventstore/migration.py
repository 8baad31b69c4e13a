"""`selfheal migrate`: copy an embedded log into a PostgreSQL one, the chain verified on both sides.

The rows are copied as stored (positions, recorded times, hashes), so the server's chain is the
file's chain: the same head hash on both sides is the proof that nothing was lost or changed.
The keys go too: sealed events stay readable, and the redaction and snapshot secrets stay the
log's own (fingerprints recorded before and after the move still compare).
"""
from __future__ import annotations

import os

import msgspec

from selfheal.eventstore.errors import CorruptLog, StoreError
from selfheal.eventstore.recorder import COLUMNS
from selfheal.eventstore.sqlite import SQLiteRecorder


class Migrated(msgspec.Struct):
    source: str
    target: str
    events: int
    keys: int
    checkpoints: int
    head_position: int
    head_hash: str


def migrate(source: str | os.PathLike, target: str) -> Migrated:
    """Copy the SQLite log at `source` into the empty PostgreSQL log at `target` (made if the
    database holds none). Both chains are verified: a source that does not verify is not
    copied, and a copy whose head differs from the source's is reported as an error."""
    from selfheal.eventstore.postgres import PostgresRecorder, copy_into, is_url

    if not is_url(target):
        raise ValueError(f"--to {target!r}: give a postgresql:// URL (the file log is the source)")
    with SQLiteRecorder(source) as file_log:
        before = file_log.verify()
        if not before.ok:
            raise CorruptLog(f"{source}: the log does not verify ({before.first_break.problem} at position "
                             f"{before.first_break.position}); nothing was copied")
        keys = file_log.connection.execute("SELECT name, key FROM keys ORDER BY name").fetchall()
        checkpoints = file_log.checkpoints()
        with PostgresRecorder(target, create=True) as server_log:
            rows = (row for page in file_log.pages(COLUMNS, page=5000) for row in page)
            copied = copy_into(server_log, rows, keys, checkpoints)
            after = server_log.verify()
            where = server_log.where
    if not after.ok or (after.head_position, after.head_hash) != (before.head_position, before.head_hash):
        raise StoreError(f"{where}: the copy does not verify as the source did (source head {before.head_position} "
                         f"{before.head_hash[:12]}, copy head {after.head_position} {after.head_hash[:12]}"
                         f"{'' if after.ok else ': ' + after.first_break.problem})")
    return Migrated(source=str(source), target=where, events=copied, keys=len(keys), checkpoints=len(checkpoints),
                    head_position=after.head_position, head_hash=after.head_hash)
