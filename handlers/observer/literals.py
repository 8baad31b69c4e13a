"""Find the records that hold a rule's literal, one piece of the log at a time, along the plan
that prefilter.py makes for the text: the first of the engine's three steps (engine.py), and
the one that touches every byte of a long log.

Each piece is searched for the literals left direct (`str.find`), then along each anchor: by the
regex engine's own scan for a common one, by `str.find` of the character for a rare one. A line
that holds a literal is noted unless its rules certainly find nothing in it (a stats line at 9.5%
for a rule of 9x%, `matching.finds_nothing`); records wrapped over several lines are compared
with every literal once their whitespace is removed, since a wrap may split a literal.
"""
from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING

from selfheal.handlers.observer.anchors import Group
from selfheal.handlers.observer.logtext import LogText
from selfheal.handlers.observer.matching import Regexes
from selfheal.handlers.observer.matching import finds_nothing as _finds_nothing
from selfheal.handlers.observer.matching import simple as _simple
from selfheal.handlers.observer.normalize import squash
from selfheal.handlers.observer.prefilter import Plan, encoded, prefilter_for

if TYPE_CHECKING:
    from selfheal.handlers.observer.engine import Matcher

__all__ = ["LiteralSearch", "candidates", "squashed_literals"]


class LiteralSearch:
    """Finds the records that hold a rule's literal, one piece of the log at a time (call it with
    each of `LogText.chunks`, in order), then `found()`: record start -> indices of the matchers
    whose literal the record holds.

    Given to LogText as `on_piece`, it searches each piece while LogText reads it for line
    structure: a log file is then read once (`read`, which also hands what was found on to a
    `Scan` after each piece, through `take`).
    """

    def __init__(self, log: LogText, matchers: tuple[Matcher, ...], plan: Plan | None = None):
        self.log, self.matchers = log, matchers
        plan = plan or prefilter_for(matchers).plan(log.data, log.sample)
        if log.binary:
            # a log kept as UTF-8 bytes is searched for the literals' UTF-8 bytes, which are in a
            # line's bytes exactly where the literal is in its decoded text
            plan = encoded(plan)
        self.nl = b"\n" if log.binary else "\n"
        # a literal with a newline in it may span pieces: each piece is searched for it together
        # with the end of the piece before (`margin` characters, one less than the longest)
        self.spanning, self.direct = plan.spanning, plan.direct
        self.margin = max((len(literal) - 1 for literal, _ in self.spanning), default=0)
        self._tail = self.nl[:0]
        self.dense = [g for g in plan.anchored if not g.sparse]
        self.sparse = [g for g in plan.anchored if g.sparse]
        self.lines: dict[int, set[int]] = {}  # line start -> matchers, until taken
        self.next_of = _next_chars(matchers, log.binary)
        self.simple, self.regexes = _simple(matchers), Regexes(matchers)

    def _line_holds(self, group: Group, buf, base: int, m: re.Match, b: int) -> int:
        """Note the literals of `group` that the line holding its match `m` holds (each match names
        one, Group.leaves), unless its rules certainly find nothing there (`_quiet`); returns the
        line's end in buf (buf[:b + 1] is the log from base, and begins at a line start:
        LogText.chunks)."""
        pos, nl = m.start(), self.nl
        start = buf.rfind(nl, 0, pos) + 1
        end = buf.find(nl, pos, b + 1)
        end = b if end < 0 else end
        leaves, regex, next_of = group.leaves, group.regex, self.next_of
        found: set[int] = set()
        while m:
            leaf, pos = leaves[m.lastindex], m.start()
            if not next_of or _followed(buf, m.end(), next_of.get(leaf.idxs)):
                found.update(leaf.idxs)
            for literal, k, idxs in leaf.also:
                if pos >= k and buf.startswith(literal, pos - k) and \
                        (not next_of or _followed(buf, pos - k + len(literal), next_of.get(idxs))):
                    found.update(idxs)
            m = regex.search(buf, pos + 1, end)
        if found:
            self._note(buf, base, start, end, b, found)
        return end

    def _note(self, buf, base: int, at: int, end: int, b: int, idxs: set[int]) -> None:
        """Note that the line buf[at:end] (end == b: the piece's last line) holds the literals of
        `idxs`, unless they are all of rules that certainly find nothing there (`_quiet`): most
        lines that a literal selects on a long log (a stats line at 9.5% for a cache at 9x%). A
        line is so left out for some of its rules only where their rules and the others' would
        find in it what the others' alone do: what it certainly gives, rule by rule."""
        if idxs <= self.simple and self._quiet(buf, base, at, end, b, idxs):
            return
        found = self.lines.get(base + at)
        if found is None:
            self.lines[base + at] = idxs
        else:
            found.update(idxs)

    def __call__(self, buf, base: int, a: int, b: int) -> None:
        """Search buf[a:b] (the log from base + a, whole lines): a literal without a newline lies
        whole in one piece."""
        holds, nl = self._line_holds, self.nl
        for literal, idxs in self.direct:
            pos, after = buf.find(literal, a, b), self.next_of.get(idxs)
            while pos >= 0:
                if not _followed(buf, pos + len(literal), after):  # a later one on the line may be
                    pos = buf.find(literal, pos + 1, b)
                    continue
                at = buf.rfind(nl, 0, pos) + 1
                end = buf.find(nl, pos, b + 1)
                self._note(buf, base, at, b if end < 0 else end, b, set(idxs))
                pos = -1 if end < 0 else buf.find(literal, end + 1, b)
        # an anchor's regex stops at the first literal of its group that is there: the line is
        # then tested for all of them, and the search goes on from its end
        for group in self.dense:
            m = group.regex.search(buf, a, b)
            while m:
                m = group.regex.search(buf, holds(group, buf, base, m, b), b)
        # rare anchors are reached with str.find (memchr), a Python step per occurrence; one after
        # a character that no literal of the group has before its anchor is passed over
        find = buf.find
        for group in self.sparse:
            char, before, match = group.char, group.before, group.regex.match
            pos = find(char, a, b)
            while pos >= 0:
                if before is None or buf[pos - 1] in before:
                    m = match(buf, pos, b)
                    if m:
                        pos = holds(group, buf, base, m, b)
                pos = find(char, pos + 1, b)
        if self.spanning:
            self._spanning(buf, base, a, b)

    def _quiet(self, buf, base: int, at: int, end: int, b: int, idxs: set[int]) -> bool:
        """Whether the line buf[at:end] (in this piece; end == b: its last line) is a record of its
        own where the `simple` rules `idxs` certainly find nothing (`_finds_nothing`), decided
        while the piece is at hand (Scan._quiet would tell the same, through reads of the log)."""
        log, start = self.log, base + at
        if end == b and base + b < len(log.data):
            return False  # the piece's last line: whether the next line continues it is known later
        cont = log._cont  # (is_continuation, a step less on a path taken at every such line)
        if base + end + 1 in cont or start in cont or start and not at:  # (buf holds the line above the piece)
            return False
        line = buf[at:end]
        above = buf[buf.rfind(self.nl, 0, at - 1) + 1:at - 1] if start else None
        return _finds_nothing(self.regexes, idxs, line.decode("utf-8", "replace") if log.binary else line, above)

    def _spanning(self, buf, base: int, a: int, b: int) -> None:
        """Literals with a newline, noted at the line where they start."""
        text = self._tail + bytes(buf[a:b]) if isinstance(buf, bytearray) else self._tail + buf[a:b]
        at = base + a - len(self._tail)
        for literal, idxs in self.spanning:
            pos = text.find(literal)
            while pos >= 0:
                self.lines.setdefault(self.log.line_start(at + pos), set()).update(idxs)
                pos = text.find(literal, pos + 1)
        self._tail = text[max(0, len(text) - self.margin):]

    def take(self) -> dict[int, set[int]]:
        """Record start -> matchers, for the lines found since the last call."""
        if not self.lines:
            return {}
        found: dict[int, set[int]] = {}
        for start, idxs in self.lines.items():
            found.setdefault(self.log.record_start(start), set()).update(idxs)
        self.lines = {}
        return found

    def found(self) -> dict[int, set[int]]:
        found = self.take()
        # a wrap may have split a literal: compare wrapped records without whitespace
        for start in self.log.multi_line_starts():
            idxs = squashed_literals(self.log, start, self.matchers)
            if idxs:
                found.setdefault(start, set()).update(idxs)
        return found


@functools.lru_cache(maxsize=16)
def _next_chars(matchers: tuple[Matcher, ...], binary: bool) -> dict[tuple[int, ...], frozenset]:
    """The matchers' `next_chars`, by the indices that share a literal (Prefilter.literals, as every
    plan names them), where each of them has some (as byte values for a log kept as bytes): a line
    holds such a literal only where one of them follows it. Made once per rule set. A literal that
    spans lines is searched across pieces, never looked up here."""
    out = {}
    for _, idxs in prefilter_for(matchers).literals:
        chars = [matchers[i].next_chars for i in idxs]
        if all(chars):
            joined = "".join(chars)
            out[idxs] = frozenset(joined.encode("ascii") if binary else joined)
    return out


def _followed(buf, at: int, chars: frozenset | None) -> bool:
    """Whether buf[at] is one of `chars` (None: anything, or nothing, follows)."""
    return chars is None or at < len(buf) and buf[at] in chars


def squashed_literals(log: LogText, start: int, matchers: tuple[Matcher, ...]) -> frozenset[int]:
    """The matchers whose literal the wrapped record at `start` holds once whitespace is removed."""
    return _squashed_in(squash(log.message(start)), matchers)


@functools.lru_cache(maxsize=256)
def _squashed_in(flat: str, matchers: tuple[Matcher, ...]) -> frozenset[int]:
    # a restart writes the same wrapped records again (its banner, its config): each is compared
    # with every literal once (20 us with the built-in rules)
    return frozenset(idx for idx, m in enumerate(matchers) if m.squashed in flat)


def candidates(log: LogText, matchers: tuple[Matcher, ...], plan: Plan | None = None) -> dict[int, set[int]]:
    """Record start -> indices of the matchers whose literal the record holds (LiteralSearch
    over a log already read)."""
    search = LiteralSearch(log, matchers, plan)
    for piece in log.chunks():
        search(*piece)
    return search.found()
