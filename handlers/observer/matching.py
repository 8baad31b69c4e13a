"""One record against the rules that selected it: their regexes run in bounded time
(`last_matches`), and the test that a line certainly gives them nothing (`finds_nothing`), which
lets the engine leave most candidate lines of a long log out while their piece is at hand.
"""
from __future__ import annotations

import re
from collections import deque
from typing import TYPE_CHECKING

from selfheal.handlers.observer.normalize import _FRAME, strip_prefix

if TYPE_CHECKING:
    from selfheal.handlers.observer.engine import Matcher

#: a record holding one rule's match more often than this (a pasted duplicate, a corrupt or
#: hostile log repeating one message on one line) gives findings for the last ones only: the
#: diagnosis reads the last of each (primary, context values), and the rest would only repeat it
MAX_MATCHES_PER_RECORD = 16


#: a rule's regex is never run on more than MATCH_WINDOW + MATCH_REACH characters at once.
#: Python's `re` cannot be stopped, and a pattern that `check_pattern` accepts (no nested or
#: ambiguous repeat, so no exponential time) can still take time that grows with a power of the
#: text's length: one `[^#]*` tried from 10,000 starts on a 1 MB line took 46 s. A longer text
#: (a pathological line) is matched in windows: the matches that start in each stretch of
#: MATCH_WINDOW characters, each seeing at most MATCH_REACH characters past its stretch, so its
#: time is linear in its length. Results differ from one search of the whole text only where a
#: match (or what a lookaround or `$` looks at) reaches more than MATCH_REACH characters past
#: its stretch: real vLLM lines are under 1,000 characters, records at most MAX_JOIN_CHARS.
MATCH_WINDOW = 4096
MATCH_REACH = 4096


def last_matches(regex: re.Pattern, text: str, keep: int = MAX_MATCHES_PER_RECORD) -> deque[re.Match]:
    """The last `keep` matches of `regex` in `text`, searched in windows when it is long."""
    n = len(text)
    if n <= MATCH_WINDOW + MATCH_REACH:
        return deque(regex.finditer(text), maxlen=keep)
    kept: deque[re.Match] = deque(maxlen=keep)
    pos = 0  # matches do not overlap, as in one search of the whole text
    for start in range(0, n, MATCH_WINDOW):
        stop = start + MATCH_WINDOW
        for m in regex.finditer(text, max(pos, start), min(n, stop + MATCH_REACH)):
            if m.start() >= stop:
                break
            kept.append(m)
            pos = m.end()
    return kept


# a line of Python source in a traceback: a raise, or a string literal continuing one
CODE = re.compile(r"\s*(?:raise\s+[\w.]+\(|[rRbBfFuU]{0,2}[\"'])")


def maybe_code(line: str) -> bool:
    """A cheap look before a record is built: source lines hold a quote or a raise."""
    return '"' in line or "'" in line or "raise" in line


def is_code(message: str) -> bool:
    return CODE.match(message) is not None


def simple(matchers: tuple[Matcher, ...]) -> frozenset[int]:
    """The matchers that read one line at a time, each regex by itself (no window, no frame)."""
    return frozenset(i for i, m in enumerate(matchers) if m.rule.window == 1 and not m.rule.raise_frame)


class Regexes(dict):
    """The distinct regexes of a set of rules (frozenset of indices -> tuple), made once per set:
    rules that read the same line with the same pattern (a failure rule and the context rule
    beside it) search it once."""

    def __init__(self, matchers: tuple[Matcher, ...]):
        super().__init__()
        self.matchers = matchers

    def __missing__(self, idxs: frozenset[int]) -> tuple[re.Pattern, ...]:
        found = self[idxs] = tuple(dict.fromkeys(r for i in sorted(idxs) for r in self.matchers[i].regexes))
        return found


def finds_nothing(regexes: Regexes, idxs: set[int], line: str, above) -> bool:
    """Whether the `simple` rules `idxs` certainly find nothing in a record that is the one
    physical line `line`: none of their regexes matches it, and it is no source code, neither by
    its look nor by a traceback frame on the line above (`above`, as kept in the log, str or
    bytes; None for the first line), which `Scan.run` reads another way. On a long log most
    candidates are such lines: a literal selects more lines than its rule matches (a stats
    line at 9.5% for a cache at 9x%), and this costs a regex search or two each."""
    short = len(line) <= MATCH_WINDOW + MATCH_REACH  # else searched as `Scan._record` searches it
    for regex in regexes[frozenset(idxs)]:
        if regex.search(line) if short else last_matches(regex, line, 1):
            return False
    if maybe_code(line) and is_code(strip_prefix(line)[1]):  # the message of a one-line record
        return False
    if above is not None and not isinstance(above, str):
        if b'File "' not in above:
            return True
        above = above.decode("utf-8", "replace")
    return above is None or not (_FRAME.search(above) and not _FRAME.search(line))  # LogText.is_source_line
