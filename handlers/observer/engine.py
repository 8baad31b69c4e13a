"""Compile the rules once, run them over a log, turn matches into findings.

Speed comes from doing almost nothing on healthy lines:

1. each rule's literal pre-filter is found at C speed, through a few searches for one
   character each over the whole log (the plan: prefilter.py; the search: literals.py); a hit
   names one physical line, hence one record;
2. records made of several physical lines (wrapped pastes, rare) are also compared with every
   literal in whitespace-free form, since a wrap may have split the literal;
3. only those (record, rule) candidates run the rule's regexes, on at most 8 KiB at a time.

All of it happens while the log is read, piece by piece (`read`, `Scan`): a candidate record is
scanned as soon as the lines it needs have been read, and its matches are folded, in log order,
into context (numbers, open regions, engine restarts) and findings, each with its seed fix (the
rule's compiled fix program, fixes.py; `Interpretation`, interpretation.py). A finding that
recurs is counted, not kept, so memory depends on the distinct failures of a log, not on its length.
"""
from __future__ import annotations

import heapq
import re
from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar

from selfheal.handlers.observer.compiler import compile_rule, expand_pattern
# the folding of hits into findings, imported here too for the modules that take it from here
from selfheal.handlers.observer.interpretation import (CAUSE_LINES, MAX_LISTED, Diagnosis, Finding, Hit,
                                                       Interpretation, Repeated, interpret)
from selfheal.handlers.observer.literals import LiteralSearch, candidates, squashed_literals
from selfheal.handlers.observer.logtext import LogText
# one record against its rules, imported here too for the modules and tests that take it from here
from selfheal.handlers.observer.matching import MATCH_REACH, MATCH_WINDOW, MAX_MATCHES_PER_RECORD, Regexes, last_matches
from selfheal.handlers.observer.matching import finds_nothing as _finds_nothing
from selfheal.handlers.observer.matching import is_code as _is_code
from selfheal.handlers.observer.matching import maybe_code as _maybe_code
from selfheal.handlers.observer.matching import simple as _simple
from selfheal.handlers.observer.normalize import LogicalLine, squash
from selfheal.handlers.observer.prefilter import Plan
from selfheal.handlers.observer.paste import as_read
from selfheal.handlers.observer.spec import CONTEXT, RuleProblem, RuleSpec

__all__ = ["CAUSE_LINES", "MATCH_REACH", "MATCH_WINDOW", "MAX_LISTED", "MAX_MATCHES_PER_RECORD", "Diagnosis", "Finding",
           "Hit", "Interpretation", "LiteralSearch", "Matcher", "Repeated", "Scan", "candidates", "compile_rules", "excerpt",
           "expand_pattern", "interpret", "last_matches", "read", "read_and_scan", "scan"]


class Matcher:
    __slots__ = ("rule", "order", "literal", "next_chars", "squashed", "regexes", "numbers", "program",
                 "refine_programs", "canonical")

    def __init__(self, rule: RuleSpec, order: int):
        compiled = compile_rule(rule)  # raises RuleProblem (a ValueError) for a malformed rule
        self.rule = rule
        self.order = order
        self.literal = core(rule.prefilter)
        # what follows the literal is known only where the part searched for ends the prefilter
        self.next_chars = rule.prefilter_next if rule.prefilter.endswith(self.literal) else ""
        self.squashed = squash(self.literal)
        self.regexes = compiled.regexes
        self.numbers = compiled.numbers
        self.program = compiled.program
        self.refine_programs = compiled.refine_programs
        self.canonical = compiled.canonical


def compile_rules(rules: Iterable[RuleSpec]) -> tuple[Matcher, ...]:
    """Compile rules once; refuse malformed ones. (The built-in rules, compiled, are
    `rules.builtin_ruleset().matchers`: the rules package builds on this module, not the reverse.)"""
    matchers, seen = [], set()
    for i, rule in enumerate(rules):
        if rule.id in seen:
            raise RuleProblem(("id",), f"duplicate rule id {rule.id!r}", rule.id)
        seen.add(rule.id)
        matchers.append(Matcher(rule, i))
    return tuple(matchers)


#: evidence lines longer than this are cut down to the match and EVIDENCE_CONTEXT characters on
#: each side, marked with "…"; real vLLM error lines are a few hundred characters (the longest
#: in the samples 695), so only pathological lines are cut
EVIDENCE_LINE_CHARS = 1024
EVIDENCE_CONTEXT = 240
#: the part of a match kept whole on one evidence line; a longer one keeps its two ends
EVIDENCE_MATCH_CHARS = 2048


#: the punctuation a paste loses (markdown eats backticks, a retyped or re-flowed message drops
#: periods and commas): a rule's literal is searched for by its longest run without any
_LOSSY = re.compile(r"[`.,'\"()]+")  # not ":": "usage: 9" keeps its value, and pastes keep colons
#: ... when that run is at least this long (a shorter one would select too many lines)
MIN_CORE = 12


def core(literal: str) -> str:
    """The part of a rule's prefilter literal that a record must hold: its longest stretch
    between punctuation that pastes lose, or the literal itself when that is short."""
    longest = max((p.strip() for p in _LOSSY.split(literal)), key=len, default="")
    return longest if len(longest) >= MIN_CORE and longest != literal.strip() else literal


def excerpt(line: str, lo: int, hi: int) -> str:
    """`line`, or when it is very long the matched part line[lo:hi] with some context."""
    if len(line) <= EVIDENCE_LINE_CHARS:
        return line
    start, end = max(0, lo - EVIDENCE_CONTEXT), min(len(line), hi + EVIDENCE_CONTEXT)
    half = EVIDENCE_MATCH_CHARS // 2
    body = line[start:end] if hi - lo <= EVIDENCE_MATCH_CHARS else line[start:lo + half] + "…" + line[hi - half:end]
    return ("…" if start else "") + body + ("…" if end < len(line) else "")


def _window(log: LogText, start: int, size: int) -> LogicalLine:
    """`size` consecutive records from position `start`, as one record joined by newlines."""
    parts, starts, raw, offset, at = [], [], [], 0, start
    for _ in range(size):
        if at < 0:
            break
        rec = log.logical(at)
        parts.append(rec.text)
        starts.extend(s + offset for s in rec.starts)
        raw.extend(rec.raw)
        offset += len(rec.text) + 1
        at = log.next_record(at)
    return LogicalLine("\n".join(parts), log.number(start), tuple(starts), tuple(raw))


#: a raise statement is read over at most this many source lines
SITE_LINES = 12
_RAISE = re.compile(r"raise\s+[\w.]+\(")
_STRING = re.compile(r"""[rRbBfFuU]{0,2}("(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')""")
_PLACEHOLDER = re.compile(r"\{[^{}\n]*\}")


def _literals(source: str) -> str:
    """The text of the string literals on a line of source, joined; an f-string's placeholders
    become a space (the value is not known)."""
    return "".join(_PLACEHOLDER.sub(" ", m.group(1)[1:-1]) for m in _STRING.finditer(source))


class Scan:
    """Candidate records -> every match of every rule, handed to `on_hit` in log order (Hit.key;
    the last MAX_MATCHES_PER_RECORD of a rule in a record), as soon as the log has been read
    far enough: a log is scanned while it is read, and memory does not grow with its length.

    `add` gives it records (start -> matchers; `wrapped`: records of several physical lines, to
    be compared with every literal without whitespace once they are whole); `run(limit)` scans
    the records whose lines, and those a window rule joins to them, start at or before `limit`
    (what LogText has read: which lines continue others is known there), up to the first one
    that is not ready; `run()` scans the rest. `margin`: a record is also left until the log
    has been read that far past its end (a literal with a newline may start in it).
    """

    def __init__(self, log: LogText, matchers: tuple[Matcher, ...], on_hit: Callable[[Hit], None], margin: int = 0):
        self.log, self.matchers, self.on_hit, self.margin = log, matchers, on_hit, margin
        self.pending: dict[int, set[int]] = {}
        self.wrapped: set[int] = set()
        self.held: list[tuple[tuple, int, Hit]] = []  # hits that a later record may precede
        self.made = 0
        self.sites: set[int] = set()  # raise statements read
        self.simple, self.regexes = _simple(matchers), Regexes(matchers)

    def add(self, found: dict[int, set[int]], wrapped: Iterable[int] = ()) -> None:
        for start, idxs in found.items():
            self.pending.setdefault(start, set()).update(idxs)
        for start in wrapped:
            self.wrapped.add(start)
            self.pending.setdefault(start, set())

    def run(self, limit: int | None = None) -> None:
        log = self.log
        for start in sorted(self.pending):
            idxs = self.pending[start]
            if limit is not None and not self._read(start, 1, limit, self.margin):
                break
            if start in self.wrapped:
                idxs |= squashed_literals(log, start, self.matchers)
            window = max((self.matchers[i].rule.window for i in idxs), default=1)
            if limit is not None and window > 1 and not self._read(start, window, limit, self.margin):
                break
            del self.pending[start]
            self.wrapped.discard(start)
            if idxs and not self._quiet(start, idxs):
                first = log.number(start)
                self._release((first, first))  # every later hit has a key from here on
                if log.is_source_line(start) or _maybe_code(log.line_text(start)) and _is_code(log.message(start)):
                    # source lines tell the phase (a call of the capture) but state no failure
                    phases = {i for i in idxs if self.matchers[i].rule.kind == CONTEXT}
                    if phases:
                        self._record(start, first, phases)
                    if not self._site(start):  # a quoted message, not a raise statement
                        self._record(start, first, idxs - phases)
                else:
                    self._record(start, first, idxs)
        if limit is None:
            self._release(None)

    def _quiet(self, start: int, idxs: set[int]) -> bool:
        """Whether the record at `start` is one physical line where the rules `idxs` certainly
        find nothing (`_finds_nothing`). `run` would read it with `_record` alone, which would
        find nothing; skipping it skips only a `_release` that the next record does."""
        if not idxs <= self.simple:
            return False
        log = self.log
        end = log.line_end(start)
        if end < len(log.data) and log.is_continuation(end + 1):
            return False
        above = log.data[log.line_start(start - 1):start - 1] if start else None
        return _finds_nothing(self.regexes, idxs, log.line_text(start, end), above)

    def _read(self, start: int, records: int, limit: int, margin: int) -> bool:
        """Whether the record at `start` and the `records - 1` after it end where it is known
        that the next line does not continue them (`margin` past the first one's end)."""
        log, at = self.log, start
        for k in range(records):
            below = log.next_line(at)
            while 0 <= below <= limit and log.is_continuation(below):
                below = log.next_line(below)
            if below < 0:
                return True
            if below + (margin if k == 0 else 0) > limit:
                return False
            at = below
        return True

    def _release(self, before: tuple[int, int] | None) -> None:
        held = self.held
        while held and (before is None or held[0][0][:2] < before):
            self.on_hit(heapq.heappop(held)[2])

    def _site(self, start: int) -> bool:
        """A source line in a traceback that holds a rule's literal (`raise ValueError("No
        available memory for the cache blocks. "`, or one of the string literals below it): the
        statement's literals, joined as Python joins them, name the error it raises. The
        statement is read once, from its `raise` line; its hits are kept apart from stated ones
        (Interpretation): the message itself, when it follows, says more."""
        log = self.log
        at = start
        for _ in range(SITE_LINES):  # up to the raise line
            if log.is_source_line(at) and _RAISE.match(log.message(at).lstrip()):
                break
            at = log.line_start(at - 1) if at else -1
            if at < 0 or not _is_code(log.message(at)):
                return False
        else:
            return False
        if at in self.sites:
            return True
        self.sites.add(at)
        lines, below = [at], log.next_line(at)
        while below >= 0 and len(lines) < SITE_LINES and _is_code(log.message(below)) \
                and not _RAISE.match(log.message(below).lstrip()):
            lines.append(below)
            below = log.next_line(below)
        said = squash("".join(_literals(log.message(x)) for x in lines))
        named = [m for m in self.matchers if m.rule.kind != CONTEXT and not m.rule.cut_in and m.squashed in said]
        if not named:
            return True
        # rules that share a literal: the one whose whole literal the statement holds, the first
        m = min(named, key=lambda m: (squash(m.rule.prefilter) not in said, m.order))
        first = log.number(at)
        evidence = [excerpt(log.line_text(x), 0, 0) for x in lines]
        heapq.heappush(self.held, ((first, first, 0, m.order), self.made, Hit(m, None, first, evidence, first)))
        self.made += 1
        return True

    def _frame(self, m: Matcher, start: int, first: int) -> Hit | None:
        """A `raise_frame` rule: its frame line, then a `raise` whose message is not shown (the
        traceback ends there, or Python 3.13 elides the arguments): a raise site of the rule."""
        log = self.log
        frame = log.line_text(start)
        if not any(regex.search(frame) for regex in m.regexes):
            return None
        below = log.next_line(start)
        if below < 0 or not _RAISE.match(log.message(below).lstrip()):
            return None
        # a statement that shows its message's literals is read by them (`_site`), not by its frame
        after = log.next_line(below)
        if _STRING.search(log.message(below)) or after >= 0 and _is_code(log.message(after)) \
                and not _RAISE.match(log.message(after).lstrip()):
            return None
        return Hit(m, None, first, [excerpt(frame, 0, 0), excerpt(log.line_text(below), 0, 0)], first)

    def _record(self, start: int, first: int, idxs: set[int]) -> None:
        log, matchers = self.log, self.matchers
        # most candidates are one physical line: match it as is (patterns search, so the header
        # in front does not matter) and skip building a LogicalLine
        below = log.next_line(start)
        single = log.line_text(start) if below < 0 or not log.is_continuation(below) else None
        hits: list[Hit] = []
        for idx in idxs:
            m = matchers[idx]
            if m.rule.raise_frame:
                hit = self._frame(m, start, first)
                if hit is not None:
                    hits.append(hit)
                continue
            if single is not None and m.rule.window == 1:
                for regex in m.regexes:
                    kept = last_matches(regex, single)
                    if kept:
                        hits.extend(Hit(m, x, first, [excerpt(single, x.start(), x.end())], first) for x in kept)
                        break
                continue
            record = log.logical(start) if m.rule.window == 1 else _window(log, start, m.rule.window)
            for regex in m.regexes:
                kept = last_matches(regex, record.text)
                if kept:
                    for x in kept:
                        line, cover = record.cover(x.start(), x.end())
                        hits.append(Hit(m, x, line, [excerpt(*c) for c in cover], record.first))
                    break
        for hit in hits:  # in the order made: ties keep it, as a stable sort does
            heapq.heappush(self.held, (hit.key, self.made, hit))
            self.made += 1


class Sink(Protocol):
    def add(self, hit: Hit) -> None: ...


S = TypeVar("S", bound=Sink)


def read(text, matchers: tuple[Matcher, ...], sink: Callable[[], S]) -> S:
    """Read a log (text, bytes or FileBytes) once, scanning it for every rule while it is read;
    the hits go to `sink()`, in log order, and that sink is returned. When the log's bytes have
    to be rewritten whole (logtext.LogText), a new sink is made and the hits start over."""
    current: list = []

    def start(log: LogText) -> Callable:
        search, made = LiteralSearch(log, matchers), sink()
        scan = Scan(log, matchers, made.add, search.margin)
        current[:] = [search, scan, made]

        def piece(buf, base: int, a: int, b: int) -> None:
            search(buf, base, a, b)
            found, wrapped = search.take(), log.take_continued()
            if found or wrapped:  # most pieces of a long log have neither
                scan.add(found, wrapped)
            if scan.pending:
                scan.run(base + b)
        return piece

    log = LogText(as_read(text), on_piece=start)
    search, scan, made = current
    scan.add(search.take(), log.take_continued())
    scan.run()
    return made


class _Hits(list):
    add = list.append


def read_and_scan(text, matchers: tuple[Matcher, ...]) -> list[Hit]:
    """`scan(LogText(text), matchers)`, scanning while LogText reads the log."""
    return read(text, matchers, _Hits)


def scan(log: LogText, matchers: tuple[Matcher, ...], plan: Plan | None = None,
         found: dict[int, set[int]] | None = None) -> list[Hit]:
    """Every match of every rule in a log already read, in log order (the last
    MAX_MATCHES_PER_RECORD of a rule in a record), in the records `found` (by default, `candidates`)."""
    hits: list[Hit] = []
    records = Scan(log, matchers, hits.append)
    records.add(candidates(log, matchers, plan) if found is None else found)
    records.run()
    return hits

