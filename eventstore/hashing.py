"""The tamper-evident hash chain over rows of the log.

Each row's hash covers the previous row's hash and a canonical form of every column but
`hash` itself, so changing, removing or reordering any stored row breaks the chain at that
row. The chain has no secret: it detects edits made behind selfheal's back, not an author
who recomputes every later hash. To pin the log against that, record the head hash that
`selfheal verify` prints somewhere else.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

import msgspec

from selfheal.eventstore.recorder import COLUMNS

GENESIS = "0" * 64
#: the hash is the last column, and covers every column before it
HASH = COLUMNS.index("hash")
assert HASH == len(COLUMNS) - 1
POSITION = COLUMNS.index("position")

_encode = msgspec.json.Encoder().encode


def row_hash(previous: str, row: Sequence) -> str:
    """The hash of a row (a tuple in table column order; a trailing `hash` is left out)."""
    return hashlib.sha256(_encode((previous, *row[:HASH]))).hexdigest()


def chain_rows(
    events, stream: str, *, position: int, version: int, previous: str, recorded_at: str
) -> list[tuple]:
    """Rows (tuples in COLUMNS order) for `events`, continuing a chain.

    `position` and `version` are the last ones already used; `previous` is the hash of the
    row at `position`. Shared by every recorder so the chain is computed one way only;
    the canonical form is `row_hash`'s, inlined here because this loop runs per event (and so
    is the row, spelled out in COLUMNS order: tests/eventstore checks it column by column).
    """
    rows = []
    sha256, encode = hashlib.sha256, _encode
    for event in events:
        position += 1
        version += 1
        row = (position, event.event_id, stream, version, event.type, event.schema_version,
               event.occurred_at, recorded_at, event.correlation_id, event.causation_id, event.data)
        previous = sha256(encode((previous, *row))).hexdigest()
        rows.append((*row, previous))
    return rows


def verify_rows(rows) -> "tuple[int, int, str, tuple[int | None, str] | None]":
    """Walk rows (tuples in column order, position order): (count, head position, head hash, break).

    A break is (position, problem) for the first row whose position skips, or whose hash does
    not follow from the previous row and its own columns.
    """
    previous, expected_position, count = GENESIS, 1, 0
    head = 0
    for row in rows:
        position = row[POSITION]
        if position != expected_position:
            return count, head, previous, (expected_position, f"position {expected_position} is missing (next stored row is {position})")
        if row_hash(previous, row) != row[HASH]:
            return count, head, previous, (position, "hash does not match the row's contents and the previous hash")
        previous, head, count = row[HASH], position, count + 1
        expected_position += 1
    return count, head, previous, None
