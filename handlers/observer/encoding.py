"""A log written as UTF-16, read as the text it holds.

Windows PowerShell 5 writes what `>`, `Out-File` and `Tee-Object` capture as UTF-16 with a
byte-order mark (a vLLM run in WSL or Docker Desktop, its output redirected from PowerShell), and
so does Notepad's "Unicode". Read as UTF-8, every other byte of such a log is a NUL and none of a
rule's words is in it: the observer found nothing in a log that shows the failure plainly.

A log whose bytes start with UTF-16's byte-order mark, or whose first bytes hold a NUL in every
other place and nowhere else (ASCII as UTF-16 without the mark: no UTF-8 log holds NULs so), is
decoded as UTF-16 before it is read, as any rewritten log is (spool.py): whole when short, a piece
at a time into a temporary file when long, so memory stays bounded. Every other log is left as it
came. Text given as str was decoded already, and is left alone.
"""
from __future__ import annotations

from selfheal.handlers.observer import spool
from selfheal.handlers.observer.logfile import FileBytes

#: the first bytes looked at for NULs
SNIFF = 4096
#: a log without the mark is UTF-16 when this share of one half of its byte places are NULs and
#: at most 1 - this share of the other half are (text that is not ASCII has fewer NULs)
NUL_SHARE = 0.9
_MARKS = (b"\xff\xfe", b"\xfe\xff")


def utf16_codec(head: bytes) -> str | None:
    """The codec of a log that starts with `head`, when it is UTF-16; None otherwise."""
    if head[:2] in _MARKS:
        return "utf-16"  # the codec reads the mark for the byte order and drops it
    n = len(head) // 2 * 2
    if n < 16 or 0 not in head:
        return None
    half = n // 2
    even, odd = head[0:n:2].count(0), head[1:n:2].count(0)
    if odd >= NUL_SHARE * half and even <= (1 - NUL_SHARE) * half:
        return "utf-16-le"
    if even >= NUL_SHARE * half and odd <= (1 - NUL_SHARE) * half:
        return "utf-16-be"
    return None


def utf16_codec_in_order(head: bytes) -> str | None:
    """`utf16_codec` with the byte order named, for a decoder that may start anywhere in the file
    (a follower that starts at its end): the mark is at the start only, and reads as U+FEFF."""
    codec = utf16_codec(head)
    if codec == "utf-16":
        return "utf-16-le" if head[:2] == _MARKS[0] else "utf-16-be"
    return codec


def as_utf8(data: bytes | bytearray | memoryview | FileBytes) -> bytes | bytearray | memoryview | FileBytes | str:
    """`data` itself, or, when it is UTF-16, the text it holds (a str, or past spool.SPOOL_OVER a
    temporary file of UTF-8 read like a log file)."""
    codec = utf16_codec(bytes(data[:SNIFF]))
    if codec is None:
        return data
    return spool.rewritten(data, lambda piece: piece, encoding=codec)


def text_of(data: bytes) -> str:
    """The text a log's bytes hold, whole: UTF-16 as above, anything else as UTF-8 with U+FFFD for
    bad bytes (what an incident records of a log it is given)."""
    codec = utf16_codec(data[:SNIFF])
    return data.decode(codec or "utf-8", "replace")
