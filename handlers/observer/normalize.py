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
import itertools
import re

#: a physical line is treated as wrapped only if it, a space and the next line's first word
#: reach this length (no wrapper breaks lines narrower than this)
MIN_WRAP = 40
#: a record is never joined from more physical lines / characters than this
MAX_JOIN_LINES = 32
MAX_JOIN_CHARS = 16_384

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
_FRAME = re.compile(r'File "[^"\n]*", line \d+')


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
        # a match that begins the message begins the record: cite it from its first line (where
        # the header is), even when a wrap cut the header so that the message starts further down
        lo = 0 if not self.text[:start].strip() else max(0, bisect.bisect_right(self.starts, start) - 1)
        hi = max(lo, bisect.bisect_left(self.starts, max(end, start + 1)) - 1)
        return self.first + lo, list(self.raw[lo: hi + 1])

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


class LogText:
    """A whole log, split once; logical lines are built on demand and cached.

    Building is cheap for mostly-INFO logs: one split, one pass of a C-level regex to find the
    few lines that do not start like a record, and Python work only for those.
    """

    def __init__(self, text: str):
        self.text = clean(text)
        self.lines = self.text.split("\n")
        # offsets[i] = position of line i in self.text (each line is followed by one "\n")
        self.offsets = list(itertools.accumulate(map((1).__add__, map(len, self.lines)), initial=0))
        self._cont = self._continuations()
        self._cache: dict[int, LogicalLine] = {}

    def _continuations(self) -> set[int]:
        cont: set[int] = set()
        lines, offsets = self.lines, self.offsets
        run = chars = 0
        last = -2
        for m in _NOT_START.finditer(self.text):
            i = bisect.bisect_right(offsets, m.start() + 1) - 1  # the line after the "\n"
            prev, line = lines[i - 1], lines[i]
            # a wrap at a width >= MIN_WRAP leaves a shorter line only when the next word did
            # not fit (a long URL): so prev + that word must reach MIN_WRAP
            word = line.split(None, 1)[0]
            if len(prev) + 1 + len(word) < MIN_WRAP or not prev.strip() or _FRAME.search(prev):
                continue
            if _SOFT_START.match(line) and strip_prefix(prev)[1].strip():
                continue  # a Python line after a complete record starts a record of its own
            if last == i - 1:
                run, chars = run + 1, chars + len(line)
            else:
                run, chars = 2, len(prev) + len(line)
            if run > MAX_JOIN_LINES or chars > MAX_JOIN_CHARS:
                continue
            cont.add(i)
            last = i
        return cont

    def __len__(self) -> int:
        return len(self.lines)

    def line_index(self, pos: int) -> int:
        """Index of the physical line holding text position `pos`."""
        return bisect.bisect_right(self.offsets, pos) - 1

    def group_start(self, i: int) -> int:
        while i in self._cont:
            i -= 1
        return i

    def group_end(self, start: int) -> int:
        """One past the last physical line of the record that starts at `start`."""
        end = start + 1
        while end in self._cont:
            end += 1
        return end

    def is_source_line(self, i: int) -> bool:
        """Line i is the source code a traceback prints under a ``File "...", line N`` frame.

        Such a line can quote a message (``raise ValueError("No available memory for the cache
        blocks. "``) without being the error itself.
        """
        return i > 0 and _FRAME.search(self.lines[i - 1]) is not None and not _FRAME.search(self.lines[i])

    def multi_line_starts(self) -> list[int]:
        """Start indices of every record made of two or more physical lines."""
        return sorted({i - 1 for i in self._cont if i - 1 not in self._cont})

    def logical(self, start: int) -> LogicalLine:
        """The record that starts at physical index `start`."""
        cached = self._cache.get(start)
        if cached is not None:
            return cached
        raw = tuple(self.lines[start: self.group_end(start)])
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
        starts = [max(0, s - cut) for s in starts]
        line = LogicalLine(message, start + 1, tuple(starts), raw, **info)
        self._cache[start] = line
        return line

    def __iter__(self):
        i, n = 0, len(self.lines)
        while i < n:
            yield self.logical(i)
            i = self.group_end(i)


def normalize(text: str) -> list[LogicalLine]:
    """Every logical line of `text`, blank ones included (their text is empty)."""
    return list(LogText(text))


def squash(text: str) -> str:
    """`text` without any whitespace: the form literals are compared in inside wrapped records."""
    return "".join(text.split())
