"""A whole log, read for its line structure: which lines continue others, line numbers, records.

normalize.py says what a line and a record are; this module finds them in a long log without
Python work per line. A log is walked in pieces (`LogText.chunks`): in each, two counts tell
at C speed (`count_newlines`, and `bytes.count` of each header after a "\\n") whether every
line starts with one of the headers learnt from a sample of the log, and only pieces where
some line does not are matched line by line. A log file (FileBytes) is walked as it is read,
so it is never held whole, and other searches of the log (literals.LiteralSearch) can ride on
the same walk (`on_piece`).
"""
from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterator

from selfheal.handlers.observer.logfile import FileBytes
from selfheal.handlers.observer.normalize import (_FRAME, _HARD_START, _HARD_START_RE, _NOT_START, _SOFT_START, MAX_JOIN_CHARS,
                                         MAX_JOIN_LINES, MIN_WRAP, LogicalLine, clean, strip_prefix)

#: the sample of a long log that its common headers (and, in prefilter.py, its common
#: characters) are learnt from: this many pieces of this many characters, spread over it
SAMPLE_PIECES, PIECE_CHARS = 16, 1024
#: at most this many headers are learnt
LEARNED_HEADERS = 8
#: a log is walked in pieces of about this size (`LogText.chunks`): each costs some Python
#: steps per search, and a piece where some line starts with no learnt header is matched line
#: by line, so pieces are neither very small nor very large
CHUNK_CHARS = 1 << 17
#: ... and where some line of a piece does not start with a learnt header, the piece is looked at
#: again in parts of about this size, and only those where some line does not are matched
PART_CHARS = 1 << 13
#: records kept once joined (a window rule joins the same ones again); the cache starts over
#: when full, so that a long log does not keep every record it looked at
CACHED_RECORDS = 256
#: a comment or quote mark that a record's first line begins with (a script's or a config's
#: comment block, an email's quote) and its wrapped lines repeat: the mark is no part of the
#: message, so it goes with the blanks around it where a continuation begins with the same mark
_COMMENT_MARK = re.compile(r"[ \t]*(#+|//+|>+)[ \t]+")

#: a line that is only a line number and its tab or bar: the gutter a numbering paste (cat -n, a
#: pastebin) put before a line whose text a carriage return moved onto lines of their own (a
#: progress bar redrawn), where the gutter was learnt from too few lines to be taken off
_LONE_GUTTER = re.compile(r"[ \t]*\d{1,7}(?:\t|[ \t]*[|\u2502][ \t]*)")
_NEWLINE_B = re.compile(b"\n")
#: a piece whose lines average at least this many bytes has its "\n" counted with memchr
#: (`count_newlines`); shorter lines are counted byte by byte
MEMCHR_LINE_BYTES = 32
#: ... this many bytes at a time: the copies it makes stay small whatever a line's length
MEMCHR_COUNT_BYTES = 1 << 20


def count_newlines(buf, a: int, b: int, dense: bool = False) -> int:
    """The "\\n" in buf[a:b]. Of bytes, by taking them out: bytes.replace finds each with memchr
    and copies what lies between, while bytes.count tests byte by byte, about twice as slow on
    log lines of 100 bytes. Where lines are short (`dense`: a log of blank lines), a memchr call
    per byte would cost more: bytes.count."""
    if dense or isinstance(buf, str):
        return buf.count("\n" if isinstance(buf, str) else b"\n", a, b)
    count = 0
    for lo in range(a, b, MEMCHR_COUNT_BYTES):
        hi = min(b, lo + MEMCHR_COUNT_BYTES)
        count += hi - lo - len(buf[lo:hi].replace(b"\n", b""))
    return count


def sample(text: str | bytes) -> str | bytes:
    """A few pieces spread over `text` (all of it when short): what a long log is mostly made of.
    Of bytes it is bytes; decoded, a piece cut inside a character starts or ends with U+FFFD
    (the sample only steers speed, never results)."""
    if len(text) <= SAMPLE_PIECES * PIECE_CHARS:
        return text[:]  # itself, for str and bytes; read, for a FileBytes
    step = len(text) // SAMPLE_PIECES
    # pieces start mid-way into their stretch: a log's first lines (a startup banner) say
    # little about the traffic that makes up the rest
    sep = "\n" if isinstance(text, str) else b"\n"
    return sep.join(text[i:i + PIECE_CHARS] for i in range(step // 2, len(text), step))


def _headers(probe: str) -> list[str]:
    """The record headers that `probe` (a sample of a long log) repeats, e.g. ``(APIServer
    pid=99) ``, none of them the start of another.

    Each is a whole match of the header regex, which has no assertion at its end: so a line
    that begins with one of them begins a record, whatever follows.
    """
    seen: dict[str, int] = {}
    for line in probe.split("\n"):
        m = _HARD_START_RE.match(line)
        if m and m.end():
            seen[line[:m.end()]] = seen.get(line[:m.end()], 0) + 1
    common = sorted((h for h, k in seen.items() if k > 1), key=seen.get, reverse=True)[:LEARNED_HEADERS]
    # without the blanks that end most headers where the header regex needs none: a line that
    # begins with the rest begins a record all the same, and a string that ends with a rarer
    # character is counted faster (`str.count` skips ahead on the characters it does not hold)
    common = list(dict.fromkeys(h.rstrip(" \t") if _HARD_START_RE.match(h.rstrip(" \t")) else h for h in common))
    return [h for h in common if _HARD_START_RE.match(h) and not any(o != h and h.startswith(o) for o in common)]


def _decode(data: bytes | bytearray) -> str:
    return data.decode("utf-8", "replace")


def _rewritten(data: bytes) -> str | bytes:
    """Bytes that hold ANSI escapes or "\\r" line ends, as LogText keeps them: escapes removed
    after decoding (removing one can join bytes that decoding would replace apart), and every
    line end a "\\n"."""
    if b"\x1b" in data:
        return clean(_decode(data))
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")


class _NotPlain(Exception):
    """The log's bytes hold ANSI escapes or "\\r" line ends: they are rewritten whole first."""


class LogText:
    """A whole log: lines, records and line numbers are worked out on demand around the
    positions asked about, so that a long healthy log costs no Python work per line.

    Physical lines are named by the position where they start in `data` (0, and every position
    after a "\\n"); `number` turns a position into a 1-based line number. The lines that continue
    the line above are found once, when the log is read.

    A log given as bytes is kept as its UTF-8 bytes (`data`; positions are byte offsets) and only
    the lines that are looked at are decoded, as `bytes.decode("utf-8", "replace")` of the whole
    log would decode them: "\\n" and "\\r" are ASCII, so no decoding step crosses them, and a
    line decodes alone exactly as it does inside the whole. Every decision about a line (header,
    continuation, rule regexes) is made on its decoded text with the same str regexes, so results
    are those of `LogText(data.decode("utf-8", "replace"))`. Bytes with ANSI escapes or "\\r"
    line ends are rewritten whole first (`_rewritten`), once a piece shows them. A str log is
    kept as it is (`data` is then the cleaned str itself). A log file given as FileBytes is
    read like bytes, in pieces (logfile.py), and whole only when it has to be rewritten.
    """

    def __init__(self, text: str | bytes | FileBytes, on_piece: Callable[[LogText], Callable] | None = None):
        """`on_piece`, when given, is called with this LogText once its sample is known, and
        returns a function that is then given each piece of the log (`chunks`) as it is read,
        after the lines that continue others in it are known: a second search of the log
        (literals.LiteralSearch) that needs no second read. It is called again if the log's bytes
        have to be rewritten after all (see above)."""
        if isinstance(text, str):
            self._load(clean(text), on_piece)
            return
        data = text if isinstance(text, (bytes, FileBytes)) else bytes(text)
        try:  # bytes are read as they are until a piece shows they must be rewritten
            self._load(data, on_piece)
        except _NotPlain:
            self._load(_rewritten(data[:]), on_piece)

    def _load(self, data: str | bytes | FileBytes, on_piece) -> None:
        self.data = data
        self.binary = not isinstance(data, str)
        self._nl = "\n" if isinstance(data, str) else b"\n"
        self._short = len(data) <= SAMPLE_PIECES * PIECE_CHARS
        self.sample = sample(data) if isinstance(data, str) else _decode(sample(data))
        self._text: str | None = data if isinstance(data, str) else None
        self._cache: dict[int, LogicalLine] = {}
        # (position, number of "\n" before it), sorted: counting resumes from the nearest one
        self._counted: list[tuple[int, int]] = [(0, 0)]  # at each piece's end
        self._asked = (0, 0)  # the position `number` was last asked about
        # the lines that continue the line above, known up to where the log has been read; with
        # `on_piece`, also those found since `take_continued` was last called
        self._cont: set[int] = set()
        self._continued: list[int] = []
        self._visit = on_piece(self) if on_piece else None
        self._continuations()

    @property
    def text(self) -> str:
        """The whole cleaned log as str (decoded on first use for a log given as bytes)."""
        if self._text is None:
            self._text = self._str(0, len(self.data))
        return self._text

    def _str(self, a: int, b: int) -> str:
        """data[a:b] as str; a and b must be line boundaries (or "\\n" positions)."""
        piece = self.data[a:b]
        return _decode(piece) if self.binary else piece

    def line_text(self, start: int, end: int | None = None) -> str:
        """The physical line that starts at `start` (and ends at `end`, its `line_end`, when
        that is known already), as str."""
        return self._str(start, self.line_end(start) if end is None else end)

    def chunks(self) -> Iterator[tuple[str | bytes | bytearray, int, int, int]]:
        """The log in pieces (buf, base, a, b) of about CHUNK_CHARS, in order: buf[a:b] is
        data[base + a:base + b]. Each piece ends right before a "\\n" (the last at the end), so
        every line lies in the piece of the "\\n" before it, and a string without a "\\n" is in
        one piece or none. buf also holds the character at b. For a log file, buf is the buffer
        it is read into (FileBytes.chunks); otherwise it is data itself."""
        data = self.data
        if isinstance(data, FileBytes):
            yield from data.chunks(CHUNK_CHARS)
            return
        n, a = len(data), 0
        while a < n:
            b = data.find(self._nl, a + CHUNK_CHARS)
            b = n if b < 0 else b
            yield data, 0, a, b
            a = b

    def _continuations(self) -> None:
        cont, continued = self._cont, self._continued if self._visit else None
        run = chars = 0
        last = -1
        for newline, above, prev, line in self._breaks():
            start = newline + 1
            # a wrap at a width >= MIN_WRAP leaves a shorter line only when the next word did
            # not fit (a long URL): so prev + that word must reach MIN_WRAP
            word = line.split(None, 1)[0]
            if len(prev) + 1 + len(word) < MIN_WRAP or not prev.strip() or _FRAME.search(prev):
                continue
            if _SOFT_START.match(line) and strip_prefix(prev)[1].strip():
                continue  # a Python line after a complete record starts a record of its own
            if _LONE_GUTTER.fullmatch(line):
                continue  # a gutter whose line went on after a carriage return, not a wrapped number's end
            if last == above:
                run, chars = run + 1, chars + len(line)
            else:
                run, chars = 2, len(prev) + len(line)
            if run > MAX_JOIN_LINES or chars > MAX_JOIN_CHARS:
                continue
            cont.add(start)
            if continued is not None:
                continued.append(start)
            last = start

    def take_continued(self) -> list[int]:
        """The records made of several physical lines whose continuations were found since the
        last call (their starts; with `on_piece` only): what the log's reader learnt meanwhile."""
        if not self._continued:
            return []
        starts = sorted({self.record_start(s) for s in self._continued})
        self._continued.clear()  # in place: the reader appends to this list
        return starts

    def _breaks(self) -> Iterator[tuple[int, int, str, str]]:
        """In order, every "\\n" after which a non-blank line does not start like a record, as
        (its position, the start of the line before it, that line, the line after it).

        Matching the header regex after every "\\n" costs about a microsecond a line. A long log
        mostly repeats a few headers (`_headers`): a piece (`chunks`) where every "\\n" is
        followed by one of them has no such line, which two counts per header tell at C speed
        (the counts of "\\n" are kept, for line numbers); only the parts of other pieces where
        some line starts otherwise are matched (`_unheaded`), with those headers tried first,
        as literals. In a piece, a line's "\\n" and the line lie
        whole, so the counts are exact. Of bytes, a line whose bytes begin with a header's UTF-8
        bytes decodes to a line that begins with the header, so the counts tell the same as in str.
        """
        heads = [] if self._short else _headers(self.sample)
        regex = re.compile(rf"\n(?!{'|'.join(map(re.escape, heads))}|{_HARD_START})(?=[ \t]*\S)") if heads \
            else _NOT_START
        needles = [self._nl + (h.encode("utf-8") if self.binary else h) for h in heads]
        total, dense = 0, False
        for buf, base, a, b in self.chunks():
            if self.binary and (buf.find(b"\x1b", a, b) >= 0 or buf.find(b"\r", a, b) >= 0):
                raise _NotPlain
            count = count_newlines(buf, a, b, dense)
            dense = count * MEMCHR_LINE_BYTES > b - a  # the next piece is likely alike
            if not needles or count != sum(buf.count(x, a, b) for x in needles):
                yield from self._unheaded(buf, base, a, b, needles, regex, dense)
            total += count
            self._counted.append((base + b, total))
            if self._visit:
                self._visit(buf, base, a, b)

    def _unheaded(self, buf, base: int, a: int, b: int, needles: list, regex: re.Pattern, dense: bool):
        """`_breaks` of a piece where some line starts with no learnt header: the piece is
        counted again in parts of about PART_CHARS (each from a "\\n" to a "\\n", so the
        counts are exact there too), and only the parts where some line does are matched: a
        restart's lines among a piece of traffic."""
        n = len(self.data)
        lo = a
        while lo < b:
            hi = buf.find(self._nl, lo + PART_CHARS, b) if needles else -1
            hi = b if hi < 0 else hi
            if needles and count_newlines(buf, lo, hi, dense) == sum(buf.count(x, lo, hi) for x in needles):
                lo = hi
                continue
            # what a header match at a line's start looks at: the line and its "\\n". The
            # region starts at a "\\n" or at the start of the log, so it decodes as it does
            # in the whole log; buf begins at a line start, so it holds the line above
            region = buf[lo:hi + 1 if base + hi < n else hi]
            text = region if isinstance(region, str) else _decode(region)
            for pos, t in self._match_positions(regex, region, text, hi - lo):
                newline, above, after = base + lo + pos, text.rfind("\n", 0, t), text.find("\n", t + 1)
                prev = text[above + 1:t] if above >= 0 or base + lo == 0 else None
                if prev is not None and len(text) == len(region):  # one byte a character
                    above = newline - len(prev)
                else:  # the line above the piece, or bytes that decoding changed
                    above = buf.rfind(self._nl, 0, newline - base) + 1 + base
                    if prev is None:
                        piece = buf[above - base:newline - base]
                        prev = piece if isinstance(piece, str) else _decode(piece)
                yield newline, above, prev, text[t + 1:after if after >= 0 else len(text)]
            lo = hi

    @staticmethod
    def _match_positions(regex: re.Pattern, region, text: str, limit: int) -> Iterator[tuple[int, int]]:
        """(position in region, position in text) of each match of `regex` in `text` (region
        decoded) before region position `limit`; each match is at a "\\n"."""
        if len(text) == len(region):  # every character came from one byte: offsets agree
            for m in regex.finditer(text):
                if m.start() >= limit:
                    break
                yield m.start(), m.start()
            return
        # otherwise text that holds no U+FFFD was decoded from valid UTF-8, which it encodes back
        # to; past one that does, the k-th "\n" of the text is the k-th "\n" of the bytes
        newlines: list[int] | None = None
        k = cpos = bpos = 0
        for m in regex.finditer(text):
            if newlines is None:
                piece = text[cpos:m.start()]
                if "\ufffd" not in piece:
                    bpos += len(piece.encode("utf-8"))
                    cpos = m.start()
                    if bpos >= limit:
                        break
                    yield bpos, m.start()
                    continue
                newlines = [x.start() for x in _NEWLINE_B.finditer(region)]
                k = text.count("\n", 0, m.start())
            else:
                k += text.count("\n", cpos, m.start())
            cpos = m.start()
            if newlines[k] >= limit:
                break
            yield newlines[k], m.start()

    @property
    def lines(self) -> list[str]:
        return self.text.split("\n")

    def __len__(self) -> int:
        return self.data.count(self._nl) + 1

    def number(self, pos: int) -> int:
        """1-based number of the physical line holding position `pos`: the "\\n" before it are
        counted from the nearest piece's end, or from the position asked about last (positions
        are mostly asked about in order). Nothing is kept per position asked about."""
        at, newlines = self._counted[bisect.bisect_right(self._counted, (pos, float("inf"))) - 1]
        if at < self._asked[0] <= pos:
            at, newlines = self._asked
        if at != pos:
            newlines += self.data.count(self._nl, at, pos)
        self._asked = (pos, newlines)
        return newlines + 1

    def line_start(self, pos: int) -> int:
        """Start of the physical line holding position `pos` (its "\\n" included)."""
        return self.data.rfind(self._nl, 0, pos) + 1

    def line_end(self, start: int) -> int:
        end = self.data.find(self._nl, start)
        return len(self.data) if end < 0 else end

    def next_line(self, start: int) -> int:
        """Start of the physical line after the one at `start`, or -1 at the last line."""
        end = self.data.find(self._nl, start)
        return end if end < 0 else end + 1

    def is_continuation(self, start: int) -> bool:
        """The line at `start` is a wrapped part of the record above it."""
        return start in self._cont

    def record_start(self, start: int) -> int:
        """Start of the record that holds the line at `start`."""
        while start in self._cont:
            start = self.line_start(start - 1)
        return start

    def record_lines(self, start: int) -> list[int]:
        """Starts of the physical lines of the record that starts at `start`."""
        out, below = [start], self.next_line(start)
        while below in self._cont:
            out.append(below)
            below = self.next_line(below)
        return out

    def next_record(self, start: int) -> int:
        """Start of the record after the one at `start`, or -1 at the last one."""
        return self.next_line(self.record_lines(start)[-1])

    def multi_line_starts(self) -> list[int]:
        """Starts of every record made of two or more physical lines."""
        return sorted({above for above in (self.line_start(s - 1) for s in self._cont) if above not in self._cont})

    def is_source_line(self, start: int) -> bool:
        """The line at `start` is the source code a traceback prints under a ``File "...", line N``
        frame.

        Such a line can quote a message (``raise ValueError("No available memory for the cache
        blocks. "``) without being the error itself.
        """
        if start == 0:
            return False
        return (_FRAME.search(self._str(self.line_start(start - 1), start - 1)) is not None
                and not _FRAME.search(self.line_text(start)))

    def logical(self, start: int) -> LogicalLine:
        """The record that starts at position `start`."""
        cached = self._cache.get(start)
        if cached is None:
            if len(self._cache) >= CACHED_RECORDS:
                self._cache.clear()
            message, starts, raw, info = self._join(start)
            cached = self._cache[start] = LogicalLine(message, self.number(start), starts, raw, **info)
        return cached

    def message(self, start: int) -> str:
        """The text of the record that starts at `start`, without numbering its line."""
        return self._join(start)[0]

    def _join(self, start: int) -> tuple[str, tuple[int, ...], tuple[str, ...], dict[str, str]]:
        raw = tuple(self.line_text(s) for s in self.record_lines(start))
        # join first, then strip the header: a wrap may have cut the header itself
        parts, starts, pos = [raw[0]], [0], len(raw[0])
        mark = _COMMENT_MARK.match(raw[0])
        for cont in raw[1:]:
            same = mark and _COMMENT_MARK.match(cont)
            piece = cont[same.end():] if same and same.group(1) == mark.group(1) else cont.lstrip()
            starts.append(pos)
            parts.append(piece)
            pos += len(piece)
        joined = "".join(parts)
        info, message = strip_prefix(joined)
        cut = len(joined) - len(message)
        return message, tuple(max(0, s - cut) for s in starts), raw, info

    def __iter__(self):
        start = 0
        while start >= 0:
            yield self.logical(start)
            start = self.next_record(start)


def normalize(text: str) -> list[LogicalLine]:
    """Every logical line of `text`, blank ones included (their text is empty)."""
    return list(LogText(text))
