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
_EXC_SUFFIXES = ("Error", "Exception", "Warning", "Exit", "Interrupt")


def exception_name(suffixes=_EXC_SUFFIXES) -> str:
    """A regex of an exception's (dotted) name: any name that ends with one of `suffixes`."""
    return rf"(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:{'|'.join(suffixes)})"


_EXC = exception_name()

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
# ([ \t] rather than \s: no part of a header looks past the end of its line and the "\n" there)
_PROGRESS = r"[^\n]{0,200}?\d%(?:\||[ \t]*Completed[ \t]*\|)"
_HARD_START = rf"(?:{_TS}|{_RANK}|{_PROC}|{_LEVEL}[\s:]|[ \t]*File \"|{_PROGRESS})"
_SOFT_START = re.compile(rf"(?:Traceback \(most recent call last\)|During handling of the above exception"
                         rf"|The above exception was|{_EXC}(?::|$))")
# searched as "\n" + lookahead: a literal first character lets the regex engine jump from one
# newline to the next instead of testing every position (3-4x faster than "^" with re.M)
_NOT_START = re.compile(rf"\n(?!{_HARD_START})(?=[ \t]*\S)")
_HARD_START_RE = re.compile(_HARD_START)
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


def squash(text: str) -> str:
    """`text` without any whitespace: the form literals are compared in inside wrapped records."""
    return "".join(text.split())


#: characters that a web page, a chat client or an input method put for the ASCII ones vLLM printed
#: (paste.py): each mapped back, with the compatibility forms of Unicode's NFKC and the quotes and
#: dashes NFKC keeps
LOOKALIKES: dict[int, str] = {
    **{c: " " for c in (0x00A0, 0x1680, *range(0x2000, 0x200B), 0x202F, 0x205F, 0x3000)},
    **{c: "" for c in (0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF, 0x00AD)},
    **{c: "'" for c in (0x2018, 0x2019, 0x201A, 0x201B, 0x2032, 0x00B4)},
    **{c: '"' for c in (0x201C, 0x201D, 0x201E, 0x201F, 0x2033, 0x00AB, 0x00BB)},
    **{c: "-" for c in (0x2010, 0x2011, 0x2012, 0x2013, 0x2212, 0xFE63)},
    # full-width ASCII (U+FF01-U+FF5E) is ASCII shifted by 0xFEE0; the ideographic full stop
    0x2026: "...", 0x3002: ".", **{c: chr(c - 0xFEE0) for c in range(0xFF01, 0xFF5F)},
}
_LOOKALIKE_RE = re.compile("[" + "".join(re.escape(chr(c)) for c in LOOKALIKES) + "]")


def has_lookalikes(probe: str) -> bool:
    return not probe.isascii() and _LOOKALIKE_RE.search(probe) is not None


def without_lookalikes(text: str) -> str:
    return text.translate(LOOKALIKES)
