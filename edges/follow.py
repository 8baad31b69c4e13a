"""Follow a growing log file like ``tail -F``: complete lines, across rotation, bounded memory.

`follow(path, stop=...)` yields each complete line (without its line end) as it is written:

- the file may not exist yet: it is waited for, and a file that appears later is read from its
  start (everything in it is new);
- rename-and-create rotation (logrotate's default): when a different file (another inode) is
  at the path, the old file is read to its end first, then the new one from its start;
- copytruncate rotation: when the file becomes shorter than what was already read, reading
  starts again at 0. A writer that refills the file beyond the old offset between two polls
  cannot be told apart from one that appended (the same blind spot as ``tail -F``); a short
  poll interval keeps it small;
- a partial last line is held until its newline arrives, or until the file rotates or is
  truncated (the rest will never come in that file, so what is there is a line);
- bytes are decoded as UTF-8 with replacement characters: a log is never refused for its bytes;
  a file written as UTF-16 (Windows PowerShell's redirection; handlers/observer/encoding.py
  tells it from its first bytes, once there are any) is decoded as UTF-16;
- a line longer than `max_line` bytes (1 MiB) is cut there, marked with `CUT_MARK`, and the
  rest of it is skipped, so one runaway line cannot exhaust memory.

Without `from_start`, a file present at the start is read from its end, as ``tail -f`` does;
if that end is in the middle of a line, the fragment is skipped (it would be a garbage line).
A partial line still held when `stop` is set is dropped: it may be incomplete.
"""
from __future__ import annotations

import codecs
import os
import threading
from collections.abc import Iterator

from selfheal.handlers.observer.encoding import SNIFF, utf16_codec_in_order

MAX_LINE = 1 << 20
CUT_MARK = " [selfheal: line cut at {n} bytes]"
_CHUNK = 1 << 16


class _Lines:
    """Splits a byte stream into decoded lines, holding at most `max_line` bytes of a partial line."""

    def __init__(self, max_line: int):
        self.max_line = max_line
        self.buf = bytearray()
        self.skipping = False  # inside a line that was already cut: drop bytes until its newline

    def feed(self, data: bytes) -> list[str]:
        if self.skipping:
            nl = data.find(b"\n")
            if nl < 0:
                return []
            self.skipping = False
            data = data[nl + 1:]
        buf = self.buf
        buf += data
        out: list[str] = []
        pos = 0
        while (nl := buf.find(b"\n", pos)) >= 0:
            out.append(self._cut(buf[pos:pos + self.max_line]) if nl - pos > self.max_line
                       else _decode(buf[pos:nl]))
            pos = nl + 1
        del buf[:pos]
        if len(buf) > self.max_line:
            out.append(self._cut(buf[:self.max_line]))
            buf.clear()
            self.skipping = True
        return out

    def end(self) -> list[str]:
        """The file ended for good (rotated, truncated): a held partial line is a line."""
        out = [_decode(self.buf)] if self.buf else []
        self.buf.clear()
        self.skipping = False
        return out

    def _cut(self, head: bytes) -> str:
        return _decode(head) + CUT_MARK.format(n=self.max_line)


def _decode(raw: bytes | bytearray) -> str:
    text = raw.decode("utf-8", "replace")
    return text[:-1] if text.endswith("\r") else text


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def follow(path: str | os.PathLike, *, poll_s: float = 0.2, stop: threading.Event, from_start: bool = False,
           max_line: int = MAX_LINE) -> Iterator[str]:
    """Yield the complete lines written to `path` until `stop` is set (see the module docstring)."""
    path = os.fspath(path)
    lines = _Lines(max_line)
    f = None
    ident: tuple[int, int] | None = None
    existed_at_start = True  # only the file present when following began is read from its end
    as_utf8: _Recoder | None = None  # the file's bytes as UTF-8, when they are not
    sniffed = False  # whether the file's first bytes were there to tell its encoding
    try:
        while not stop.is_set():
            if f is None:
                try:
                    f = open(path, "rb")
                except FileNotFoundError:
                    existed_at_start = False
                    stop.wait(poll_s)
                    continue
                ident = _identity(os.fstat(f.fileno()))
                as_utf8, sniffed = _recoder(f)
                if existed_at_start and not from_start:
                    _seek_end(f, lines, as_utf8.newline if as_utf8 else b"\n")
                existed_at_start = False
            chunk = f.read(_CHUNK)
            if chunk:
                if not sniffed:
                    as_utf8, sniffed = _recoder(f)
                yield from lines.feed(as_utf8(chunk) if as_utf8 else chunk)
                continue
            # at the end of what is there: rotated, truncated, or just quiet?
            try:
                now_at_path = _identity(os.stat(path))
            except FileNotFoundError:
                now_at_path = ident  # renamed away, not yet re-created: keep the old file open
            if now_at_path != ident:
                # rename-and-create: the writer may have appended to the old file between our last
                # read and the rename, so read it to its end before switching
                while chunk := f.read(_CHUNK):
                    yield from lines.feed(as_utf8(chunk) if as_utf8 else chunk)
                yield from lines.end()
                f.close()
                f = None
                continue
            if os.fstat(f.fileno()).st_size < f.tell():
                yield from lines.end()
                f.seek(0)
                as_utf8, sniffed = _recoder(f)  # the writer may have started afresh in another encoding
                continue
            stop.wait(poll_s)
    finally:
        if f is not None:
            f.close()


class _Recoder:
    """A UTF-16 file's bytes, a chunk at a time, as UTF-8 (a code unit cut by a chunk's end is
    kept for the next); `newline` is its line end as the file holds it."""

    def __init__(self, codec: str):
        self.newline = "\n".encode(codec)
        self._decode = codecs.getincrementaldecoder(codec)("replace").decode

    def __call__(self, chunk: bytes) -> bytes:
        return self._decode(chunk).replace("\ufeff", "").encode("utf-8", "surrogatepass")


def _recoder(f) -> tuple[_Recoder | None, bool]:
    """(the recoder for a file written as UTF-16, else None; whether its first bytes were there
    to tell)."""
    head = os.pread(f.fileno(), SNIFF, 0)
    codec = utf16_codec_in_order(head)
    return (_Recoder(codec) if codec else None), len(head) >= 2


def _seek_end(f, lines: _Lines, newline: bytes = b"\n") -> None:
    """Start at the end; if that is mid-line, skip the rest of that line when it comes."""
    end = f.seek(0, os.SEEK_END)
    end -= end % len(newline)  # a UTF-16 file's half-written code unit is read when it is whole
    if end > 0:
        f.seek(end - len(newline))
        lines.skipping = f.read(len(newline)) != newline
