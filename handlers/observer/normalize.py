"""Raw log text -> logical lines: prefixes stripped, hard-wrapped pastes joined again.

A *physical* line is what the input has between newlines; a *logical* line is one log record.
Most vLLM records are one physical line starting with a header such as
``(EngineCore_DP0 pid=5123) ERROR 11-24 06:55:12 [core.py:708] ``. A record is split over
several physical lines when a terminal or an issue paste wrapped it; those continuation lines
carry no header, and are joined back so that rules still match.

Joining is a heuristic. A wrong join only adds text to a record (rules search, so a match is
not lost) and evidence cites just the physical lines a match covers:

- line i continues line i-1 when line i does not start like a record (a log header, a
  timestamp, a process prefix, a traceback ``File`` line; a Python line such as
  ``SomeError: ...`` or ``Traceback ...`` too, unless line i-1 is a header whose message is
  empty, i.e. the wrap cut right after the header), neither line is blank,
  line i-1 plus the first word of line i reach MIN_WRAP characters (wrapping happens at
  80-ish columns, and leaves a shorter line only when the next word did not fit; short lines
  are whole records) and line i-1 is not a traceback ``File "..."`` line (whose next line is
  the source code of that frame, not a continuation);
- continuation lines are joined with NO separator after their leading whitespace is removed:
  a terminal wraps in the middle of a word ("dev" / "ice"), an issue paste at a space that it
  may drop ("on" / "device"). Rules therefore treat a space as "any whitespace, or none"
  (see spec.py), which matches both.

Line numbers are 1-based and count "\\n", "\\r\\n" and a lone "\\r" as line ends (Python's
universal newlines, which is what a file opened in text mode gives a reader). ANSI escapes
(vLLM colours its process prefix) are removed before anything else.
"""
from __future__ import annotations

import bisect
import re
from collections.abc import Iterator

#: a physical line is treated as wrapped only if it, a space and the next line's first word
#: reach this length (no wrapper breaks lines narrower than this)
MIN_WRAP = 40
#: a record is never joined from more physical lines / characters than this
MAX_JOIN_LINES = 32
MAX_JOIN_CHARS = 16_384
#: the sample of a long log that its common headers (and, in prefilter.py, its common
#: characters) are learnt from: this many pieces of this many characters, spread over it
SAMPLE_PIECES, PIECE_CHARS = 16, 1024
#: at most this many headers are learnt
LEARNED_HEADERS = 8
#: a long log is searched for lines that do not start like a record in chunks of this size
CHUNK_CHARS = 1 << 16

_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")

# pieces of a record header, in the order they appear on a line
_TS = (r"(?:\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?\s+"
       r"|[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \S+ [^\s:\[]+(?:\[\d+\])?:\s+)")
_RANK = r"(?:\[rank\d+\]:\s*)"
# every vLLM / Ray process prefix names the pid: "(EngineCore_DP0 pid=5123)",
# "(VllmWorker TP0 pid=812)", "(RayWorkerWrapper pid=1234, ip=10.0.0.2)"
_PROC = r"(?:\([A-Za-z_][^()\n]{0,80}?\bpid=\d+[^()\n]{0,60}\)\s*)"
_LEVEL = r"(?:DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL)"
# \s* rather than \s+: a paste may have dropped a space at a wrap inside the header
_VLLM = rf"(?:(?P<level>{_LEVEL})\s*\d\d-\d\d\s*\d\d:\d\d:\d\d(?:\.\d+)?\s*\[?(?P<source>[^\s\]]+:\d+)\]\s?)"
_PYLOG = rf"(?:{_LEVEL}:[\w.]*:)"
_EXC = r"(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception|Warning|Exit|Interrupt)"

_PREFIX = re.compile(
    rf"(?P<ts>{_TS})?(?P<rank>{_RANK})?(?P<proc>{_PROC})?(?P<rank2>{_RANK})?"
    rf"(?:{_VLLM}|(?P<pylog>{_PYLOG}))?"
)
_EXC_HEAD = re.compile(rf"(?P<exc>{_EXC}):\s*")
# a physical line that begins a record (used to decide what is NOT a continuation). Headers
# are certain; Python's own lines (traceback, "SomeError: ...") are nearly so, but a wrap can
# put "ValueError: ..." right under a header whose message it cut off, so those are "soft".
# progress bars (tqdm, vLLM's "NN% Completed |") are printed unprefixed between log records;
# they are records of their own, not wrapped parts of the line above
_PROGRESS = r"[^\n]{0,200}?\d%(?:\||\s*Completed\s*\|)"
_HARD_START = rf"(?:{_TS}|{_RANK}|{_PROC}|{_LEVEL}[\s:]|[ \t]*File \"|{_PROGRESS})"
_SOFT_START = re.compile(rf"(?:Traceback \(most recent call last\)|During handling of the above exception"
                         rf"|The above exception was|{_EXC}(?::|$))")
# searched as "\n" + lookahead: a literal first character lets the regex engine jump from one
# newline to the next instead of testing every position (3-4x faster than "^" with re.M)
_NOT_START = re.compile(rf"\n(?!{_HARD_START})(?=[ \t]*\S)")
_HARD_START_RE = re.compile(_HARD_START)
_FRAME = re.compile(r'File "[^"\n]*", line \d+')
_NEWLINE_B = re.compile(b"\n")


class LogicalLine:
    """One record. `text` is the message (header removed, wrapped parts joined)."""

    __slots__ = ("text", "first", "starts", "raw", "level", "process", "source", "exc_type")

    def __init__(self, text: str, first: int, starts: tuple[int, ...], raw: tuple[str, ...],
                 level: str = "", process: str = "", source: str = "", exc_type: str = ""):
        self.text = text
        self.first = first        # 1-based number of the first physical line
        self.starts = starts      # offset in `text` where each physical line's part begins
        self.raw = raw            # the physical lines as given (ANSI escapes removed)
        self.level = level
        self.process = process
        self.source = source
        self.exc_type = exc_type

    @property
    def last(self) -> int:
        return self.first + len(self.raw) - 1

    def span_lines(self, start: int, end: int) -> tuple[int, list[str]]:
        """(first line number, physical lines) covering text[start:end]."""
        first, cover = self.cover(start, end)
        return first, [raw for raw, _, _ in cover]

    def cover(self, start: int, end: int) -> tuple[int, list[tuple[str, int, int]]]:
        """(first line number, [(physical line, lo, hi)]) covering text[start:end], where
        line[lo:hi] is the part of text[start:end] on that line (empty when it has none)."""
        # a match that begins the message begins the record: cite it from its first line (where
        # the header is), even when a wrap cut the header so that the message starts further down
        lo = 0 if not self.text[:start].strip() else max(0, bisect.bisect_right(self.starts, start) - 1)
        hi = max(lo, bisect.bisect_left(self.starts, max(end, start + 1)) - 1)
        out = []
        for k in range(lo, hi + 1):
            # only a prefix of a physical line is dropped (header, indentation), so each line's part
            # ends where the line ends; parts end at the next part, or at the "\n" between records
            # that a window puts there
            part_end = len(self.text) if k + 1 == len(self.starts) else self.starts[k + 1]
            if k + 1 < len(self.starts) and self.text[part_end - 1:part_end] == "\n":
                part_end -= 1
            part_start = min(max(start, self.starts[k]), part_end)
            raw, shift = self.raw[k], len(self.raw[k]) - part_end
            a = max(part_start + shift, 0)
            out.append((raw, a, max(min(end, part_end) + shift, a)))
        return self.first + lo, out

    def __repr__(self) -> str:
        return f"LogicalLine(first={self.first}, text={self.text!r})"


def clean(text: str) -> str:
    """Remove ANSI escapes and make every line end a single "\\n"."""
    if not isinstance(text, str):
        text = bytes(text).decode("utf-8", "replace") if isinstance(text, (bytes, bytearray)) else str(text)
    if "\x1b" in text:
        text = _ANSI.sub("", text)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def strip_prefix(line: str) -> tuple[dict[str, str], str]:
    """Split one physical line into its header facts and its message.

    The facts (all optional): ``level`` (INFO, ERROR...), ``process`` (``EngineCore_DP0
    pid=5123``), ``source`` (``core.py:708``), ``exc_type`` (``ValueError``). The exception name
    is taken off the message so that rules see the same text whether or not the exception was
    raised or only logged; it is kept here as information.
    """
    info: dict[str, str] = {}
    m = _PREFIX.match(line)
    rest = line
    if m and m.end():
        rest = line[m.end():]
        if m.group("proc"):
            info["process"] = m.group("proc").strip()[1:-1]
        if m.group("source"):
            info["source"] = m.group("source")
            info["level"] = m.group("level")
        elif m.group("pylog"):
            info["level"] = m.group("pylog").split(":", 1)[0]
    e = _EXC_HEAD.match(rest)
    if e:
        info["exc_type"] = e.group("exc")
        rest = rest[e.end():]
    return info, rest


def sample(text: str | bytes) -> str | bytes:
    """A few pieces spread over `text` (all of it when short): what a long log is mostly made of.
    Of bytes it is bytes; decoded, a piece cut inside a character starts or ends with U+FFFD
    (the sample only steers speed, never results)."""
    if len(text) <= SAMPLE_PIECES * PIECE_CHARS:
        return text
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
    return [h for h in common if _HARD_START_RE.match(h) and not any(o != h and h.startswith(o) for o in common)]


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "replace")


class LogText:
    """A whole log, kept as one string: lines, records and line numbers are worked out on demand
    around the positions asked about, so that a long healthy log costs no Python work per line.

    Physical lines are named by the position where they start in `data` (0, and every position
    after a "\\n"); `number` turns a position into a 1-based line number. The lines that continue
    the line above are found once, when the log is read.

    A log given as bytes is kept as its UTF-8 bytes (`data`; positions are byte offsets) and only
    the lines that are looked at are decoded, as `bytes.decode("utf-8", "replace")` of the whole
    log would decode them: "\\n" and "\\r" are ASCII, so no decoding step crosses them, and a
    line decodes alone exactly as it does inside the whole. Every decision about a line (header,
    continuation, rule regexes) is made on its decoded text with the same str regexes, so results
    are those of `LogText(data.decode("utf-8", "replace"))`. A log with ANSI escapes is decoded
    whole first (removing an escape can join bytes that decoding would have replaced apart).
    A str log is kept as it is (`data` is then the cleaned str itself).
    """

    def __init__(self, text: str | bytes):
        if isinstance(text, (bytes, bytearray, memoryview)):
            data = bytes(text)
            if b"\x1b" in data:
                data = clean(_decode(data))
            elif b"\r" in data:
                data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        else:
            data = clean(text)
        self.data = data
        self.binary = isinstance(data, bytes)
        self._nl = b"\n" if self.binary else "\n"
        self._short = len(data) <= SAMPLE_PIECES * PIECE_CHARS
        self.sample = _decode(sample(data)) if self.binary else sample(data)
        self._text: str | None = None if self.binary else data
        self._cache: dict[int, LogicalLine] = {}
        # (position, number of "\n" before it), sorted: counting resumes from the nearest one
        self._counted: list[tuple[int, int]] = [(0, 0)]
        self._cont = self._continuations()

    @property
    def text(self) -> str:
        """The whole cleaned log as str (decoded on first use for a log given as bytes)."""
        if self._text is None:
            self._text = _decode(self.data)
        return self._text

    def _str(self, a: int, b: int) -> str:
        """data[a:b] as str; a and b must be line boundaries (or "\\n" positions)."""
        piece = self.data[a:b]
        return _decode(piece) if self.binary else piece

    def line_text(self, start: int) -> str:
        """The physical line that starts at `start`, as str."""
        return self._str(start, self.line_end(start))

    def _continuations(self) -> set[int]:
        cont: set[int] = set()
        data = self.data
        run = chars = 0
        last = -1
        for newline in self._breaks():
            start, above = newline + 1, data.rfind(self._nl, 0, newline) + 1
            prev, line = self._str(above, newline), self.line_text(start)
            # a wrap at a width >= MIN_WRAP leaves a shorter line only when the next word did
            # not fit (a long URL): so prev + that word must reach MIN_WRAP
            word = line.split(None, 1)[0]
            if len(prev) + 1 + len(word) < MIN_WRAP or not prev.strip() or _FRAME.search(prev):
                continue
            if _SOFT_START.match(line) and strip_prefix(prev)[1].strip():
                continue  # a Python line after a complete record starts a record of its own
            if last == above:
                run, chars = run + 1, chars + len(line)
            else:
                run, chars = 2, len(prev) + len(line)
            if run > MAX_JOIN_LINES or chars > MAX_JOIN_CHARS:
                continue
            cont.add(start)
            last = start
        return cont

    def _breaks(self) -> Iterator[int]:
        """In order, every "\\n" after which a non-blank line does not start like a record.

        Matching the header regex after every "\\n" costs about a microsecond a line. A long log
        mostly repeats a few headers (`_headers`), so it is read in chunks: a chunk where
        every "\\n" is followed by one of them has no such line, which two counts per header
        tell at C speed (the counts of "\\n" are kept, for line numbers); only other chunks
        are matched, with those headers tried first, as literals.
        """
        text = self.data
        heads = [] if self._short else _headers(self.sample)
        if not heads:
            if self.binary:
                yield from self._decoded_breaks(_NOT_START, 0, len(text), len(text))
            else:
                yield from (m.start() for m in _NOT_START.finditer(text))
            return
        quick = re.compile(rf"\n(?!{'|'.join(map(re.escape, heads))}|{_HARD_START})(?=[ \t]*\S)")
        if self.binary:
            yield from self._byte_breaks(heads, quick)
            return
        needles = ["\n" + h for h in heads]
        newlines = 0
        for a in range(0, len(text), CHUNK_CHARS):
            b = min(a + CHUNK_CHARS, len(text))
            count = text.count("\n", a, b)
            if count != sum(text.count(x, a, b + len(x) - 1) for x in needles):
                # matched up to the end of the line after the chunk: enough to see that a line
                # is not blank, while a header cut off there fails to match, so each match is
                # checked again on the whole text
                end = text.find("\n", b) + 1 or len(text)
                for m in quick.finditer(text, a, end):
                    if m.start() >= b:
                        break
                    if quick.match(text, m.start()):
                        yield m.start()
            newlines += count
            self._counted.append((b, newlines))

    def _byte_breaks(self, heads: list[str], quick: re.Pattern) -> Iterator[int]:
        """`_breaks` of a log kept as bytes: a line (after "\\n") whose bytes begin with a
        header's UTF-8 bytes decodes to a line that begins with the header, so the counts tell
        the same as in str. Chunks end at a "\\n" (the next one starts with it): each line's
        header lies in the chunk of its "\\n", and a chunk decodes as it does in the whole."""
        data, n = self.data, len(self.data)
        needles = [b"\n" + h.encode("utf-8") for h in heads]
        newlines, a = 0, 0
        while a < n:
            b = data.find(b"\n", a + CHUNK_CHARS)
            b = n if b < 0 else b
            count = data.count(b"\n", a, b)
            if count != sum(data.count(x, a, b) for x in needles):
                # every line that starts in the chunk is decoded whole, with its "\\n": all that
                # a header match at its start can look at
                yield from self._decoded_breaks(quick, a, b, min(b + 1, n))
            newlines += count
            self._counted.append((b, newlines))
            a = b

    def _decoded_breaks(self, regex: re.Pattern, a: int, b: int, end: int) -> Iterator[int]:
        """The "\\n" positions in data[a:b] where `regex` (which starts with "\\n" and looks no
        further than the end of the line after it, and one character more) matches data[a:end]
        decoded. data[a:end] may start inside a character: what decodes to U+FFFD there comes
        before the first "\\n", where no match starts."""
        region = self.data[a:end]
        text = _decode(region)
        if len(text) == len(region):  # every character came from one byte: offsets agree
            for m in regex.finditer(text):
                if m.start() + a >= b:
                    break
                yield m.start() + a
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
                    if bpos + a >= b:
                        break
                    yield bpos + a
                    continue
                newlines = [x.start() for x in _NEWLINE_B.finditer(region)]
                k = text.count("\n", 0, m.start())
            else:
                k += text.count("\n", cpos, m.start())
            cpos = m.start()
            pos = newlines[k] + a
            if pos >= b:
                break
            yield pos

    @property
    def lines(self) -> list[str]:
        return self.text.split("\n")

    def __len__(self) -> int:
        return self.data.count(self._nl) + 1

    def number(self, pos: int) -> int:
        """1-based number of the physical line holding position `pos`."""
        i = bisect.bisect_right(self._counted, (pos, float("inf"))) - 1
        at, newlines = self._counted[i]
        if at != pos:
            newlines += self.data.count(self._nl, at, pos)
            self._counted.insert(i + 1, (pos, newlines))
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
        for cont in raw[1:]:
            piece = cont.lstrip()
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


def squash(text: str) -> str:
    """`text` without any whitespace: the form literals are compared in inside wrapped records."""
    return "".join(text.split())
