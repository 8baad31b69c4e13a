"""Cut a stream of log lines into incident texts: the trouble, with the lines that led to it.

The live inputs (`edges.follow`, `edges.journal`, standard input) give one line at a time; the
observer reads one incident text at a time. `IncidentChunker` sits between them:

- it keeps a rolling window of the last `context_lines` lines;
- a line that looks like trouble opens an incident: an ERROR or CRITICAL log level, a Python
  ``Traceback (most recent call last)``, an exception line (``ValueError: ...``,
  ``torch.OutOfMemoryError: ...``), or a line holding the literal pre-filter of one of the
  observer's failure rules (so a message the observer recognises opens an incident even when it
  is logged at WARNING or printed bare). These are literal checks, plus a small regex on the
  few lines a literal selects; `diagnose` never runs per line;
- the incident collects every following line until `quiet_s` of stream time pass without a new
  line (the crashed process went silent), the engine restarts (a new start attempt is a new
  story), `after_lines` (200) lines in a row pass without trouble (a server that logged one
  error and kept serving would otherwise make its whole healthy traffic part of the incident;
  a traceback's own lines are trouble or come in short runs between ERROR lines), or the
  incident reaches `max_bytes`;
- the incident text is the window as it was before the first trouble line, then the collected
  lines, joined by newlines. The oldest context lines give way when the text would exceed
  `max_bytes`; a single longer line is cut.

Time is the `now` passed with each line (or to `tick`), never the wall clock, so chunking is
deterministic and replayable; `now` is a number of seconds on any monotonic scale.

Healthy INFO traffic alone emits NOTHING. Every incident becomes an event kept forever (and
replayed by every future rule version), so a chunk per burst of normal request logs would flood
the log store with texts that say "all is well". What is not emitted is still seen: the window
carries it into the next incident as context.

Lines of an emitted incident are not context for the next one (the window restarts empty), so
no line is recorded in two incidents.
"""
from __future__ import annotations

import functools
import re
from collections import deque

from selfheal.handlers.observer.rules import CONTEXT, builtin_ruleset


@functools.cache
def _literals() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(every failure rule's pre-filter: its presence makes a line trouble; the pre-filters of
    the context rules that reset the observer's segments: an engine (re)start). Worked out on
    first use, so importing a watcher does not compile the rules."""
    rules = builtin_ruleset().rules
    # only errors: accounting lines, stats lines and a log cut short are failures only once a
    # rule's condition, a streak or the end of the log says so, which a line alone cannot tell
    # (a watcher reads runtime symptoms from /metrics; the error an accounting line implies follows it)
    stated = [r for r in rules if r.kind != CONTEXT and r.confidence == "stated" and r.sustain == 1 and not r.cut_in
              and not r.when]
    return (tuple(sorted({r.prefilter for r in stated})),
            tuple(sorted({r.prefilter for r in rules if r.kind == CONTEXT and "reset" in r.marks})))

# a level token in the header part of a line: "ERROR 11-24 ...", "(EngineCore pid=1) ERROR ...",
# "ERROR:    Exception in ASGI application" (uvicorn), "CRITICAL:root:..." (logging's default)
_BAD_LEVEL = re.compile(r"(?:^|[\s)\]])(?:ERROR|CRITICAL|FATAL)(?:[\s:\]]|$)")
_CALM_LEVEL = re.compile(r"(?:^|[\s)\]])(?:DEBUG|INFO|WARNING|WARN)(?:[\s:\]]|$)")
# an exception line as Python prints it, behind an optional prefix; "Error:" alone is not one
_EXCEPTION = re.compile(r"(?:^|[\s)\]])(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception):(?:\s|$)")
#: levels and exception names are looked for in the header part only, not deep in a message
_HEAD = 200


def is_trouble(line: str) -> bool:
    head = line[:_HEAD]
    if ("ERROR" in head or "CRITICAL" in head or "FATAL" in head) and _BAD_LEVEL.search(head):
        return True
    if "Traceback (most recent call last)" in line:
        return True
    if ("Error:" in head or "Exception:" in head) and _EXCEPTION.search(head) and not _CALM_LEVEL.search(head):
        return True
    return any(lit in line for lit in _literals()[0])


def is_restart(line: str) -> bool:
    return any(lit in line for lit in _literals()[1])


def _size(line: str) -> int:
    return len(line) + 1 if line.isascii() else len(line.encode("utf-8", "replace")) + 1


class IncidentChunker:
    """Lines in (with their stream time), incident texts out. See the module docstring."""

    def __init__(self, quiet_s: float = 2.0, context_lines: int = 200, max_bytes: int = 1 << 20,
                 after_lines: int = 200):
        if quiet_s <= 0 or context_lines < 0 or max_bytes < 1 or after_lines < 1:
            raise ValueError("quiet_s must be > 0, context_lines >= 0, max_bytes and after_lines >= 1")
        self.quiet_s = quiet_s
        self.context_lines = context_lines
        self.after_lines = after_lines
        self.max_bytes = max_bytes
        self._window: deque[str] = deque(maxlen=context_lines or None)
        self._context: list[str] = []
        self._lines: list[str] | None = None   # the open incident's lines, None when none is open
        self._bytes = 0
        self._calm = 0                          # lines since the open incident's last trouble line
        self._last: float | None = None         # stream time of the last line

    @property
    def open(self) -> bool:
        return self._lines is not None

    def feed(self, line: str, now: float) -> list[str]:
        """Take one line (without its line end) seen at stream time `now`."""
        out = self.tick(now)
        self._last = now if self._last is None else max(self._last, now)
        if len(line) > self.max_bytes:  # characters >= bytes / 4: a cheap bound before measuring
            line = line[: self.max_bytes]
        if self._lines is not None and is_restart(line):
            out += self._emit()
        trouble = is_trouble(line)
        if self._lines is None:
            if not trouble:
                if self.context_lines:
                    self._window.append(line)
                return out
            self._context = list(self._window) if self.context_lines else []
            self._lines, self._bytes = [], 0
        self._calm = 0 if trouble else self._calm + 1
        self._lines.append(line)
        self._bytes += _size(line)
        if self._bytes >= self.max_bytes or self._calm >= self.after_lines:
            out += self._emit()
        return out

    def tick(self, now: float) -> list[str]:
        """Stream time passed without a line: close the open incident once it has been quiet."""
        if self._lines is not None and self._last is not None and now - self._last >= self.quiet_s:
            return self._emit()
        return []

    def flush(self) -> list[str]:
        """The stream ended: the open incident, if any, is complete."""
        return self._emit() if self._lines is not None else []

    def _emit(self) -> list[str]:
        lines = self._lines or []
        budget = self.max_bytes - self._bytes
        context: list[str] = []
        for line in reversed(self._context):  # the nearest context matters most
            budget -= _size(line)
            if budget < 0:
                break
            context.append(line)
        context.reverse()
        text = "\n".join(context + lines)
        if len(text.encode("utf-8", "replace")) > self.max_bytes:  # one huge line; cut on a byte budget
            text = text.encode("utf-8", "replace")[: self.max_bytes].decode("utf-8", "ignore")
        self._lines, self._context, self._bytes, self._calm = None, [], 0, 0
        self._window.clear()
        return [text]
