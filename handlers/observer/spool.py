"""A long log rewritten line by line into a temporary file, never held whole.

Undoing a paste (paste.py) or taking collector prefixes off (prefixes.py) rewrites every line of
a log. For a paste of a few kilobytes that is done on the text whole. A docker json-file log or
a compose log of hundreds of megabytes would then be decoded and copied whole, a few times its
size in memory (100 MB of json-file log took 360 MB). Over SPOOL_OVER bytes the rewrite goes a
piece of whole lines at a time into an unnamed temporary file, which the observer then reads as
it reads any log file (logfile.FileBytes): memory stays bounded by the piece and the longest line.

A rewrite given here must be line-local (each line's result depends on that line alone): a
piece ends at a line end, so a line never straddles two pieces.
"""
from __future__ import annotations

import codecs
import os
import tempfile
from collections.abc import Callable, Iterator

from selfheal.handlers.observer.logfile import FileBytes
from selfheal.handlers.observer.normalize import clean

#: a log longer than this (bytes or characters) is rewritten into a temporary file
SPOOL_OVER = 8 << 20
#: how much of the log is decoded and rewritten at a time
PIECE = 1 << 20
#: a line longer than this is cut where it reaches it (a log with no line ends at all)
LONGEST_LINE = 16 << 20


class SpooledLog(FileBytes):
    """The rewritten log in its unnamed temporary file; the descriptor closes with the object
    (nobody else holds it, and the file is gone once it closes)."""

    def __del__(self) -> None:
        self.close()


def rewritten(text: str | bytes | FileBytes, fix: Callable[[str], str], name: str = "log",
              encoding: str = "utf-8") -> str | FileBytes:
    """`fix` applied to `text` (its bytes read in `encoding`, with U+FFFD for bad bytes), cleaned
    (normalize.clean): as a str for a short log, as a SpooledLog of UTF-8 for one longer than
    SPOOL_OVER."""
    if len(text) <= SPOOL_OVER:  # read at call time: tests lower it to spool short logs
        whole = text if isinstance(text, str) else bytes(text[:]).decode(encoding, "replace")
        return fix(clean(whole))
    with tempfile.TemporaryFile(prefix="selfheal-") as out:
        for piece in _pieces(text, encoding):
            out.write(fix(clean(piece)).encode("utf-8", "surrogatepass"))
        out.flush()
        size = out.tell()
        fd = os.dup(out.fileno())
    return SpooledLog(fd, size, f"{getattr(text, 'path', name)} (rewritten)")


def _pieces(text: str | bytes | FileBytes, encoding: str = "utf-8") -> Iterator[str]:
    """`text` as str pieces that end at a line end (but the last), about PIECE long."""
    decode = None if isinstance(text, str) else codecs.getincrementaldecoder(encoding)("replace").decode
    carried, at, n = "", 0, len(text)
    while at < n:
        raw = text[at:at + PIECE]
        at += len(raw)
        piece = carried + (raw if decode is None else decode(bytes(raw), final=at >= n))
        end = piece.rfind("\n") + 1
        if end == 0 and len(piece) < LONGEST_LINE and at < n:
            carried = piece
            continue
        if end == 0 or at >= n:
            end = len(piece)
        carried = piece[end:]
        yield piece[:end]
    if carried:
        yield carried
