"""One regex match of a rule in a log (`Hit`): what it says, and where.

engine.py makes hits while the log is read; interpretation.py folds them into findings.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

from selfheal.handlers.observer.spec import CONTEXT
from selfheal.handlers.observer.units import convert

if TYPE_CHECKING:
    from selfheal.handlers.observer.engine import Matcher

__all__ = ["Hit", "said", "times"]


class Hit:
    """One regex match: what it says, and where (`line`: 1-based, `evidence`: the physical lines,
    cut down when very long). A hit at a raise site (`site`) has no match: the traceback shows
    the source line that raises the rule's error, not the error."""

    __slots__ = ("matcher", "groups", "numbers", "line", "evidence", "key", "site", "said")

    def __init__(self, matcher: Matcher, m: re.Match | None, line: int, evidence: list[str], record_first: int):
        self.matcher = matcher
        self.site = m is None
        self.said = m.group() if m is not None and matcher.rule.kind == CONTEXT else ""  # (said)
        self.groups = {} if m is None else {k: v for k, v in m.groupdict().items() if v is not None}
        self.numbers: dict[str, float | int] = {}
        for capture, key, unit, target in matcher.numbers:
            text = self.groups.get(capture)
            value = None if text is None else convert(text, unit, target)
            if value is not None:
                self.numbers[key] = value
        self.line = line
        self.evidence = [_printable(x) for x in evidence]
        self.key = (line, record_first, 0 if m is None else m.start(), matcher.order)


def said(hit: Hit) -> tuple[str, str]:
    """What a context hit said: its rule and the text it matched (a copy a wrapper logs again
    says the same)."""
    return hit.matcher.rule.id, hit.said


def _printable(line: str) -> str:
    # lone surrogates (text decoded with surrogateescape) cannot be encoded to JSON later
    return line if line.isascii() else line.encode("utf-8", "replace").decode("utf-8")


_RAY_REPEATED = re.compile(r"\[repeated (\d{1,6})x across cluster\]")


def times(hit: Hit) -> int:
    """How many records one match stands for: Ray folds the same line from many workers into
    one, ending "[repeated 30x across cluster]" (31 in all)."""
    m = _RAY_REPEATED.search(hit.evidence[-1]) if hit.evidence else None
    return 1 + int(m.group(1)) if m else 1
