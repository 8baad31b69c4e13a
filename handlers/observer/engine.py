"""Compile the rules once, run them over a log, turn matches into findings.

Speed comes from doing almost nothing on healthy lines:

1. each rule's literal pre-filter is found at C speed, through a few searches for one
   character each over the whole log (prefilter.py); a hit names one physical line, hence one
   record;
2. records made of several physical lines (wrapped pastes, rare) are also compared with every
   literal in whitespace-free form, since a wrap may have split the literal;
3. only those (record, rule) candidates run the rule's regexes.

Then one pass in log order folds context (numbers, open regions, engine restarts) and turns
each failure match into a `Finding` with its seed fix (the rule's compiled fix program, fixes.py).
"""
from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable

import msgspec

from selfheal.handlers.observer.compiler import compile_rule, expand_pattern
from selfheal.handlers.observer.expr import Env
from selfheal.handlers.observer.logtext import LogText
from selfheal.handlers.observer.normalize import LogicalLine, squash
from selfheal.handlers.observer.prefilter import Plan, encoded, prefilter_for
from selfheal.handlers.observer.spec import CONTEXT, RuleProblem, RuleSpec
from selfheal.handlers.observer.units import convert
from selfheal.schemas.actuators import ActuatorBounds
from selfheal.schemas.events import Finding  # the one Finding type: observations record it as is
from selfheal.schemas.serving import ServingConfig

__all__ = ["Diagnosis", "Hit", "LiteralSearch", "Matcher", "candidates", "choose_primary", "compile_rules", "excerpt", "expand_pattern",
           "interpret", "last_matches", "read_and_scan", "scan"]


class Diagnosis(msgspec.Struct, frozen=True, kw_only=True):
    primary: Finding | None
    findings: list[Finding]


class Matcher:
    __slots__ = ("rule", "order", "literal", "squashed", "regexes", "numbers", "program", "refine_programs",
                 "canonical")

    def __init__(self, rule: RuleSpec, order: int):
        compiled = compile_rule(rule)  # raises RuleProblem (a ValueError) for a malformed rule
        self.rule = rule
        self.order = order
        self.literal = rule.prefilter
        self.squashed = squash(rule.prefilter)
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


#: a record holding one rule's match more often than this (a pasted duplicate, a corrupt or
#: hostile log repeating one message on one line) gives findings for the last ones only: the
#: diagnosis reads the last of each (primary, context values), and the rest would only repeat it
MAX_MATCHES_PER_RECORD = 16
#: evidence lines longer than this are cut down to the match and EVIDENCE_CONTEXT characters on
#: each side, marked with "…"; real vLLM error lines are a few hundred characters (the longest
#: in the samples 695), so only pathological lines are cut
EVIDENCE_LINE_CHARS = 1024
EVIDENCE_CONTEXT = 240
#: the part of a match kept whole on one evidence line; a longer one keeps its two ends
EVIDENCE_MATCH_CHARS = 2048


class Hit:
    """One regex match: what it says, and where (`line`: 1-based, `evidence`: the physical lines,
    cut down when very long)."""

    __slots__ = ("matcher", "groups", "numbers", "line", "evidence", "key")

    def __init__(self, matcher: Matcher, m: re.Match, line: int, evidence: list[str], record_first: int):
        self.matcher = matcher
        self.groups = {k: v for k, v in m.groupdict().items() if v is not None}
        self.numbers: dict[str, float | int] = {}
        for capture, key, unit, target in matcher.numbers:
            text = self.groups.get(capture)
            value = None if text is None else convert(text, unit, target)
            if value is not None:
                self.numbers[key] = value
        self.line = line
        self.evidence = [_printable(x) for x in evidence]
        self.key = (line, record_first, m.start(), matcher.order)


def _printable(line: str) -> str:
    # lone surrogates (text decoded with surrogateescape) cannot be encoded to JSON later
    return line if line.isascii() else line.encode("utf-8", "replace").decode("utf-8")


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


class LiteralSearch:
    """Finds the records that hold a rule's literal, one piece of the log at a time (call it with
    each of `LogText.chunks`, in order), then `found()`: record start -> indices of the matchers
    whose literal the record holds.

    Given to LogText as `on_piece`, it searches each piece while LogText reads it for line
    structure: a log file is then read once.
    """

    def __init__(self, log: LogText, matchers: tuple[Matcher, ...], plan: Plan | None = None):
        self.log, self.matchers = log, matchers
        plan = plan or prefilter_for(matchers).plan(log.data, log.sample)
        if log.binary:
            # a log kept as UTF-8 bytes is searched for the literals' UTF-8 bytes, which are in a
            # line's bytes exactly where the literal is in its decoded text
            plan = encoded(plan)
        self.nl = b"\n" if log.binary else "\n"
        # a literal with a newline in it may span pieces: searched over the whole text in found()
        self.spanning, self.direct = plan.spanning, plan.direct
        self.dense = [g for g in plan.anchored if not g.sparse]
        self.sparse = [g for g in plan.anchored if g.sparse]
        self.lines: dict[int, set[int]] = {}  # line start -> matchers, until found()

    def _line_holds(self, literals, buf, base: int, pos: int, b: int) -> int:
        """Note the literals that the line holding buf[pos] holds; returns the line's end in buf
        (buf[:b + 1] is the log from base, and begins at a line start: LogText.chunks)."""
        start = buf.rfind(self.nl, 0, pos) + 1
        end = buf.find(self.nl, pos, b + 1)
        end = b if end < 0 else end
        line = buf[start:end]
        for literal, idxs in literals:
            if literal in line:
                self.lines.setdefault(base + start, set()).update(idxs)
        return end

    def __call__(self, buf, base: int, a: int, b: int) -> None:
        """Search buf[a:b] (the log from base + a, whole lines): a literal without a newline lies
        whole in one piece."""
        holds, nl, lines = self._line_holds, self.nl, self.lines
        for literal, idxs in self.direct:
            pos = buf.find(literal, a, b)
            while pos >= 0:
                lines.setdefault(base + buf.rfind(nl, 0, pos) + 1, set()).update(idxs)
                end = buf.find(nl, pos, b + 1)
                pos = -1 if end < 0 else buf.find(literal, end + 1, b)
        # an anchor's regex stops at the first literal of its group that is there: the line is
        # then tested for all of them, and the search goes on from its end
        for group in self.dense:
            m = group.regex.search(buf, a, b)
            while m:
                m = group.regex.search(buf, holds(group.literals, buf, base, m.start(), b), b)
        # rare anchors are reached with str.find (memchr), a Python step per occurrence
        for group in self.sparse:
            pos = buf.find(group.char, a, b)
            while pos >= 0:
                if group.regex.match(buf, pos, b):
                    pos = holds(group.literals, buf, base, pos, b)
                pos = buf.find(group.char, pos + 1, b)

    def found(self) -> dict[int, set[int]]:
        log, text = self.log, self.log.data
        for literal, idxs in self.spanning:  # noted at the line where it starts
            pos = text.find(literal)
            while pos >= 0:
                self.lines.setdefault(log.line_start(pos), set()).update(idxs)
                pos = text.find(literal, log.line_end(pos) + 1)
        found: dict[int, set[int]] = {}
        for start, idxs in self.lines.items():
            found.setdefault(log.record_start(start), set()).update(idxs)
        # a wrap may have split a literal: compare wrapped records without whitespace
        for start in log.multi_line_starts():
            flat = squash(log.message(start))
            for idx, m in enumerate(self.matchers):
                if m.squashed in flat:
                    found.setdefault(start, set()).add(idx)
        return found


def candidates(log: LogText, matchers: tuple[Matcher, ...], plan: Plan | None = None) -> dict[int, set[int]]:
    """Record start -> indices of the matchers whose literal the record holds (LiteralSearch
    over a log already read)."""
    search = LiteralSearch(log, matchers, plan)
    for piece in log.chunks():
        search(*piece)
    return search.found()


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


def read_and_scan(text, matchers: tuple[Matcher, ...]) -> list[Hit]:
    """`scan(LogText(text), matchers)`, searching for the literals while LogText reads the log."""
    searches: list[LiteralSearch] = []

    def start(log: LogText) -> LiteralSearch:
        searches.append(LiteralSearch(log, matchers))
        return searches[-1]

    log = LogText(text, on_piece=start)
    return scan(log, matchers, found=searches[-1].found())


def scan(log: LogText, matchers: tuple[Matcher, ...], plan: Plan | None = None,
         found: dict[int, set[int]] | None = None) -> list[Hit]:
    """Every match of every rule, in log order (the last MAX_MATCHES_PER_RECORD of a rule in a
    record), in the records `found` (by default, `candidates`)."""
    hits: list[Hit] = []
    if found is None:
        found = candidates(log, matchers, plan)
    # in log order: line numbers are counted on from the previous candidate
    for start, idxs in sorted(found.items()):
        if log.is_source_line(start):
            continue
        # most candidates are one physical line: match it as is (patterns search, so the header
        # in front does not matter) and skip building a LogicalLine
        below, first = log.next_line(start), log.number(start)
        single = log.line_text(start) if below < 0 or not log.is_continuation(below) else None
        for idx in idxs:
            m = matchers[idx]
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
    hits.sort(key=lambda h: h.key)
    return hits


class Outcome(msgspec.Struct, kw_only=True):
    """What interpret() saw: (priority, finding) pairs per engine start attempt, and whether
    the server reported itself ready after the last finding."""
    segments: list[list[tuple[int, Finding]]]
    ready_after_last_finding: bool = False


def interpret(hits: list[Hit], current: ServingConfig | None, bounds: ActuatorBounds,
              buffer: float) -> Outcome:
    """Fold the hits in log order into findings."""
    out = Outcome(segments=[[]])
    context: dict[str, tuple[float | int, Hit]] = {}
    regions: dict[str, Hit] = {}
    for hit in hits:
        rule = hit.matcher.rule
        if rule.kind == CONTEXT:
            for mark in rule.marks:
                if mark == "reset":
                    context.clear()
                    regions.clear()
                    if out.segments[-1]:
                        out.segments.append([])
                elif mark == "ready":
                    out.ready_after_last_finding = True
                elif mark.startswith("open:"):
                    regions[mark[5:]] = hit
                else:
                    regions.pop(mark[6:], None)
            for key, value in hit.numbers.items():
                context[key] = (value, hit)
            continue
        out.segments[-1].append(_finding(hit, context, regions, current, bounds, buffer))
        out.ready_after_last_finding = False
        regions.clear()  # whatever phase was running ended with this failure
    return out


def _finding(hit: Hit, context, regions, current, bounds, buffer) -> tuple[int, Finding]:
    rule = hit.matcher.rule
    kind, program, direction, notes = rule.kind, hit.matcher.program, rule.direction, [rule.note]
    priority = rule.priority
    support: list[Hit] = []
    for ref, ref_program in zip(rule.refine, hit.matcher.refine_programs):
        if ref.when in regions:
            opener = regions[ref.when]
            kind, program, direction, priority = ref.kind, ref_program, ref.direction, ref.priority
            notes.append(f"{ref.note} (line {opener.line})")
            support.append(opener)
            break
    numbers = dict(hit.numbers)
    for key in rule.uses:
        if key not in numbers and key in context:
            value, source = context[key]
            numbers[key] = value
            support.append(source)
            notes.append(f"{key} from line {source.line}")
    fix, fix_note = program.run(Env.build(numbers, current, bounds, buffer, hit.groups))
    notes.insert(0, fix_note)
    evidence = list(hit.evidence)
    for s in sorted(set(support), key=lambda h: h.key):
        evidence.extend(x for x in s.evidence if x not in evidence)
    finding = Finding(kind=kind, rule=rule.id, rule_version=rule.version, numbers=numbers,
                      fix_direction=dict(direction), fix=fix, action="tune" if fix else "alert",
                      evidence=evidence, line=hit.line, note="; ".join(n for n in notes if n))
    return priority, finding


def choose_primary(outcome: Outcome) -> Finding | None:
    """The most specific finding (the last one on a tie) of the last start attempt that failed,
    or None when the server reported itself ready after every finding."""
    if outcome.ready_after_last_finding:
        return None
    for segment in reversed(outcome.segments):
        if segment:
            return max(reversed(segment), key=lambda pf: pf[0])[1]
    return None
