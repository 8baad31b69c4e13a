"""A log file read in pieces: the observer's view of a log too long to be worth holding whole.

`selfheal diagnose FILE` used to read the whole file into one bytes object. For a long log most
of that read's time is the kernel handing out and zeroing fresh memory (about 0.4 ns a byte,
more than all but one of the observer's own passes), and its memory grows with the log.
`FileBytes` instead reads the file in order into one reused buffer (`chunks`, what the
observer's passes walk), and serves everything else (the lines around a hit, a line number)
with `os.pread` from a few cached blocks. Memory is bounded by the buffer, the cache and the
longest line, whatever the log's size.

It offers the part of the `bytes` interface that the observer uses on its data (`len`,
slicing, `find`, `rfind`, `count` of one byte), with the same results as on the file's bytes.
The file is read up to the size it had when opened, so lines a running server appends meanwhile
are left for the next read; a file that shrinks meanwhile (rotated with copytruncate) raises
LogFileChanged rather than giving results about two different files.
"""
from __future__ import annotations

import errno
import os
import stat
from collections import OrderedDict
from collections.abc import Iterator

#: the reused buffer's size: the file is read this much at a time
READ_BYTES = 1 << 20
#: random reads are served from cached, aligned blocks of this size
BLOCK_BYTES = 1 << 16
CACHED_BLOCKS = 16


class LogFileChanged(ValueError):
    """The file was shorter than when it was opened: it was truncated or replaced meanwhile."""


def open_log(path: str | os.PathLike) -> FileBytes | bytes:
    """A log file, as FileBytes for a regular file, or its bytes read whole for anything else
    that can be read once (a pipe, a terminal); the caller closes a FileBytes. Raises OSError
    (a directory as IsADirectoryError)."""
    name = os.fspath(path)
    fd = os.open(name, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode):
            log, fd = FileBytes(fd, st.st_size, name), -1  # it owns the descriptor now
            return log
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), name)
        parts = []
        while part := os.read(fd, READ_BYTES):
            parts.append(part)
        return b"".join(parts)
    finally:
        if fd >= 0:
            os.close(fd)


class FileBytes:
    """The first `len(self)` bytes of a regular file open as `fd` (its size when opened); it
    owns `fd` and closes it in `close`."""

    def __init__(self, fd: int, size: int, path: str):
        self.path = path
        self._fd = fd
        self._size = size
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        # while `chunks` runs: the buffer it reads into, and where in the file buf[0] is
        self._buf: bytearray | None = None
        self._base = self._filled = 0

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> FileBytes:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return self._size

    def __repr__(self) -> str:
        return f"FileBytes({self.path!r}, {self._size} bytes)"

    # -- reading ---------------------------------------------------------------------------------

    def _shrank(self, at: int) -> LogFileChanged:
        return LogFileChanged(f"{self.path}: the file shrank while it was read ({self._size} bytes when opened, "
                              f"ended at byte {at}); was it truncated or rotated?")

    def _pread(self, size: int, at: int) -> bytes:
        out = os.pread(self._fd, size, at)
        while len(out) < size:  # a regular file gives less only at its end
            more = os.pread(self._fd, size - len(out), at + len(out))
            if not more:
                raise self._shrank(at + len(out))
            out += more
        return out

    def _block(self, k: int) -> bytes:
        block = self._blocks.get(k)
        if block is None:
            at = k * BLOCK_BYTES
            block = self._blocks[k] = self._pread(min(BLOCK_BYTES, self._size - at), at)
            if len(self._blocks) > CACHED_BLOCKS:
                self._blocks.popitem(last=False)
        else:
            self._blocks.move_to_end(k)
        return block

    def _held(self, start: int, end: int) -> Iterator[tuple[bytes | bytearray, int, int]]:
        """The file's bytes start..end as (buffer, lo, hi) pieces in order, with buffer[lo:hi]
        the next part: from the buffer `chunks` is reading into where it holds them, else from
        the cached blocks. No copy."""
        at = start
        while at < end:
            if self._buf is not None and self._base <= at < self._base + self._filled:
                buf, off, held = self._buf, self._base, self._filled
            else:
                k = at // BLOCK_BYTES
                buf, off = self._block(k), k * BLOCK_BYTES
                held = len(buf)
            stop = min(end, off + held)
            yield buf, at - off, stop - off
            at = stop

    def _bounds(self, start: int | None, end: int | None) -> tuple[int, int]:
        if end is None:
            end = self._size  # as a slice's end left out (find(sub, start), a line's end)
        if start is not None and 0 <= start <= end <= self._size:
            return start, end  # the usual case, without building a slice
        start, end, _ = slice(start, end).indices(self._size)
        return start, max(start, end)

    def __getitem__(self, key: slice) -> bytes:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("FileBytes supports slices with no step only")
        a, b = self._bounds(key.start, key.stop)
        held = self._buf is not None and self._base <= a and b <= self._base + self._filled
        if held:  # the usual case while `chunks` runs: a line near the piece being read
            return bytes(self._buf[a - self._base:b - self._base])
        if b - a > CACHED_BLOCKS // 2 * BLOCK_BYTES:  # a long range: read it once, past the cache
            return self._pread(b - a, a)
        parts = [buf[lo:hi] for buf, lo, hi in self._held(a, b)]
        return bytes(parts[0]) if len(parts) == 1 else b"".join(parts)

    # -- searching: one byte through the held buffers (what is looked for is mostly near: the
    # end of a line); a longer string in steps of READ_BYTES that overlap by len(sub) - 1 --------

    def find(self, sub: bytes, start: int | None = None, end: int | None = None) -> int:
        start, end = self._bounds(start, end)
        base, held = self._base, self._base + self._filled
        if len(sub) == 1 and self._buf is not None and base <= start <= held:
            # the usual case, as in __getitem__: first in the buffer, then past it
            stop = min(end, held)
            i = self._buf.find(sub, start - base, stop - base)
            if i >= 0 or stop == end:
                return i if i < 0 else base + i
            start = stop
        if len(sub) != 1:
            at = start
            while at + len(sub) <= end:
                stop = min(end, at + READ_BYTES)
                i = self[at:min(end, stop + len(sub) - 1)].find(sub)
                if i >= 0:
                    return at + i
                at = stop
            return -1
        base = start
        for buf, lo, hi in self._held(start, end):
            i = buf.find(sub, lo, hi)
            if i >= 0:
                return base + i - lo
            base += hi - lo
        return -1

    def rfind(self, sub: bytes, start: int | None = None, end: int | None = None) -> int:
        _one_byte(sub, "rfind")
        start, end = self._bounds(start, end)
        base = self._base
        if self._buf is not None and base <= end <= base + self._filled:  # the usual case, as in find
            i = self._buf.rfind(sub, max(start, base) - base, end - base)
            if i >= 0 or start >= base:
                return i if i < 0 else base + i
            end = base  # then before the buffer
        # backwards, one block (or the held buffer) at a time: a line's start is mostly near
        stop = end
        while stop > start:
            at = max(start, (stop - 1) // BLOCK_BYTES * BLOCK_BYTES)
            if self._buf is not None and self._base < stop <= self._base + self._filled:
                at = max(start, self._base)
            found, pos = -1, at
            for buf, lo, hi in self._held(at, stop):  # one or two pieces: the last hit is the one
                i = buf.rfind(sub, lo, hi)
                if i >= 0:
                    found = pos + i - lo
                pos += hi - lo
            if found >= 0:
                return found
            stop = at
        return -1

    def count(self, sub: bytes, start: int | None = None, end: int | None = None) -> int:
        _one_byte(sub, "count")
        return sum(buf.count(sub, lo, hi) for buf, lo, hi in self._held(*self._bounds(start, end)))

    # -- reading in order --------------------------------------------------------------------------

    def chunks(self, size: int) -> Iterator[tuple[bytearray, int, int, int]]:
        """The file in order as (buf, base, a, b): buf[a:b] is the file's bytes base+a..base+b.

        The pieces follow each other and end right before a "\\n" (the last at the end of the
        file), `size` bytes or more after they start (where the file allows). `buf` also holds
        the line above buf[a] (from its start) and the byte at b, so that a line and the one
        above it can be looked at without a read. Until the next piece is asked for, the other
        methods read that part of the file from `buf` too. `buf` is reused: copy what is kept.
        """
        if self._buf is not None:
            raise RuntimeError("FileBytes.chunks is already running")
        buf = bytearray(max(READ_BYTES, 2 * size))
        self._buf, self._base, self._filled = buf, 0, 0
        try:
            start = 0  # where the next piece starts, in the file
            while start < self._size:
                want = start + size  # the piece ends at the first "\n" at or after this
                while True:
                    b = buf.find(b"\n", max(0, want - self._base), self._filled) if want < self._size else -1
                    if b >= 0 or self._base + self._filled >= self._size:
                        break
                    self._refill(start)
                b = self._size if b < 0 else b + self._base
                yield buf, self._base, start - self._base, b - self._base
                start = b
        finally:
            self._buf, self._base, self._filled = None, 0, 0

    def _refill(self, start: int) -> None:
        """Read on: keep from the start of the line above `start`, read into the rest of the
        buffer (grown when one line does not fit)."""
        buf = self._buf
        keep = self.rfind(b"\n", 0, start) + 1
        kept = self._base + self._filled - keep
        buf[:kept] = buf[keep - self._base:self._filled]
        if len(buf) - kept < max(1, READ_BYTES // 2):  # one line fills half of it: make room
            buf.extend(bytes(len(buf)))
        self._base, self._filled = keep, kept
        want = min(len(buf) - kept, self._size - (keep + kept))
        view = memoryview(buf)
        try:
            got = 0
            while got < want:
                n = _preadv(self._fd, view[kept + got:kept + want], keep + kept + got)
                if not n:
                    raise self._shrank(keep + kept + got)
                got += n
        finally:
            view.release()
        self._filled = kept + want


def _preadv(fd: int, view: memoryview, at: int) -> int:
    """Read into `view` from position `at` without a copy where the platform allows."""
    if hasattr(os, "preadv"):
        return os.preadv(fd, [view], at)
    data = os.pread(fd, len(view), at)
    view[:len(data)] = data
    return len(data)


def _one_byte(sub: bytes, what: str) -> None:
    # occurrences of a longer string may straddle two held buffers; the observer looks only for
    # line ends this way (longer strings are searched in `chunks` buffers, or with `find`)
    if len(sub) != 1:
        raise ValueError(f"FileBytes.{what} looks for one byte")
