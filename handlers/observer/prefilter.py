"""Find the lines that hold a rule's literal, in few passes over the text.

Every rule has a literal that a record must contain before its regexes run (spec.py). A
`str.find` per literal costs one pass over the whole log per literal: on a long log that was
most of the work, and rule sets grow. Instead, literals are found through *anchors*: one
character per group of literals, each literal holding its group's character. A group's regex
matches at an occurrence of the character that is part of one of its literals (the rest of the
literal checked around it, in C), and the line it is on is then tested for every literal of the
group. The occurrences are reached either by `str.find` of the character (memchr speed, a
Python step per occurrence: for a rare character) or by the regex engine's own scan for its
first character (one slower pass, but no Python per occurrence: for a common one).

What is rare depends on the traffic, so the plan is made per text: the characters are counted
in a sample of it (logtext.sample) and a greedy cover picks groups by estimated cost, leaving
a literal to `str.find` ("direct") when no anchor is cheaper. Whichever is chosen, exactly the
lines that hold a literal are reported, so the plan changes speed, never results. Short texts
are searched directly: planning would cost more than it saves.

A literal with a newline in it spans lines: it is never anchored, and is searched directly over
the whole text (`Plan.spanning`).
"""
from __future__ import annotations

import functools
import re
from typing import NamedTuple

#: estimated costs in nanoseconds, measured with CPython 3.11 on a 100 MB log (only their
#: ratios matter): per character of text, a `str.find` of one character (memchr) and the
#: regex engine's scan for its first character (the former is cheap because engine.py does
#: all of them a chunk at a time, each chunk read from memory once); per occurrence of the
#: anchor, reached by `str.find` (a Python step) or by the regex engine, plus per literal
#: tried there
SCAN_NS, SRE_NS = 0.015, 0.23
SPARSE_HIT_NS, SRE_HIT_NS, SRE_ALT_NS = 250.0, 5.0, 1.0
#: a `str.find` of a string costs about FIND_NS / len(string) per character of text (it skips
#: ahead by up to its length), and no less than FIND_MIN_NS
FIND_NS, FIND_MIN_NS = 3.0, 0.15
#: making a plan: counting one character in the sample, per character of the sample
COUNT_NS = 0.3


def find_cost(literal: str, n: int) -> float:
    return n * max(FIND_MIN_NS, FIND_NS / len(literal))


class Group(NamedTuple):
    char: str
    regex: re.Pattern
    sparse: bool  # reach the occurrences with str.find, not with the regex engine's scan
    literals: list[tuple[str, tuple[int, ...]]]


class Plan(NamedTuple):
    """How one text is searched; literals come with the indices of the matchers that use them.
    `spanning` are the literals with a newline in them, searched directly over the whole text."""
    anchored: list[Group]
    direct: list[tuple[str, tuple[int, ...]]]
    spanning: tuple[tuple[str, tuple[int, ...]], ...] = ()


class Prefilter:
    """What planning needs from a rule set, worked out once."""

    def __init__(self, literals: list[str]):
        by_literal: dict[str, list[int]] = {}
        for idx, literal in enumerate(literals):
            by_literal.setdefault(literal, []).append(idx)
        self.literals = [(literal, tuple(idxs)) for literal, idxs in by_literal.items()]
        # the literals each character can anchor, as a bit mask over self.literals
        self.masks: dict[str, int] = {}
        for k, (literal, _) in enumerate(self.literals):
            if "\n" not in literal:
                for ch in dict.fromkeys(literal):
                    self.masks[ch] = self.masks.get(ch, 0) | 1 << k
        self.anchorable = functools.reduce(int.__or__, self.masks.values(), 0)
        # the plan of every short text, made once (nothing may change it): a text of a few lines
        # is diagnosed in about 100 us, and building this took several of them
        self.short = Plan([], [x for x in self.literals if "\n" not in x[0]],
                          tuple(x for x in self.literals if "\n" in x[0]))
        # what searching every literal directly costs per character of text: the test of
        # whether a text is short enough for that, on every diagnose
        self.direct_ns = sum(find_cost(literal, 1) for literal, _ in self.literals)
        #: a log given as bytes can be searched as bytes (ruleset.RuleSet.diagnose)
        self.bytes_ok = all(bytes_safe(literal) for literal in literals)

    def plan(self, text: str, sample: str | None = None, anchored: bool | None = None) -> Plan:
        """The cheapest way to search `text` by the estimates above, counting characters in
        `sample` (a part of `text`; all of it by default). `anchored` forces anchors for every
        literal that has one (True) or none at all (False), for tests."""
        n = len(text)
        sample = text if sample is None else sample
        if anchored is False or anchored is None and n * self.direct_ns < len(sample) * len(self.masks) * COUNT_NS:
            return self.short  # a short text: planning would cost more than it saves
        direct = {k: find_cost(literal, n) for k, (literal, _) in enumerate(self.literals)}
        scale = n / max(len(sample), 1)
        occurrences = {ch: sample.count(ch) * scale for ch in self.masks}
        groups, uncovered, covered = [], self.anchorable, 0
        # greedy weighted set cover: the anchor, or a literal by itself, that costs least per
        # literal it newly covers
        while uncovered:
            best = None
            for ch, mask in self.masks.items():
                new = mask & uncovered
                if new:
                    k = new.bit_count()
                    sparse = n * SCAN_NS + occurrences[ch] * SPARSE_HIT_NS
                    dense = n * SRE_NS + occurrences[ch] * (SRE_HIT_NS + SRE_ALT_NS * k)
                    if best is None or min(sparse, dense) / k < best[0]:
                        best = (min(sparse, dense) / k, ch, new, sparse <= dense)
            alone = min((k for k in direct if uncovered >> k & 1), key=direct.get)
            if anchored is None and direct[alone] < best[0]:
                uncovered &= ~(1 << alone)
                continue
            _, ch, new, sparse = best
            literals = [self.literals[k] for k in range(new.bit_length()) if new >> k & 1]
            groups.append(Group(ch, _anchor_regex(ch, tuple(lit for lit, _ in literals)), sparse, literals))
            uncovered &= ~new
            covered |= new
        return Plan(groups, [lit for k, lit in enumerate(self.literals) if not covered >> k & 1 and "\n" not in lit[0]],
                    self.short.spanning)


@functools.lru_cache(maxsize=256)
def _anchor_regex(char: str, literals: tuple[str, ...]) -> re.Pattern:
    """A regex that matches at an occurrence of `char` that is part of one of `literals`.

    It starts with the character, so that the regex engine's search jumps from one occurrence
    to the next; the rest of each literal is checked with lookarounds, the character after the
    anchor first (the engine skips an alternative whose first literal character differs
    without entering it).
    """
    alternatives = []
    for literal in literals:
        k = literal.index(char)
        before, after = literal[:k], literal[k + 1:]
        alt = re.escape(after[:1])
        if len(after) > 1:
            alt += f"(?={re.escape(after[1:])})"
        if before:
            alt += f"(?<={re.escape(literal[:k + 1 + len(after[:1])])})"
        alternatives.append(alt)
    return re.compile(re.escape(char) + "(?:" + "|".join(alternatives) + ")")


def bytes_safe(literal: str) -> bool:
    """Whether `literal`'s UTF-8 bytes are in a line's bytes exactly where it is in the line
    decoded with errors="replace": not for U+FFFD (which bad bytes decode to) nor for a lone
    surrogate (which has no UTF-8 bytes)."""
    if "\ufffd" in literal:
        return False
    try:
        literal.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def encoded(plan: Plan) -> Plan:
    """`plan` for a text kept as UTF-8 bytes: the same groups and literals, as bytes. UTF-8 is
    self-synchronising, so a literal's bytes occur exactly where the literal does."""
    def lits(literals):
        for literal, _ in literals:
            if not bytes_safe(literal):
                raise ValueError(f"literal {literal!r} cannot be searched for in bytes")
        return [(literal.encode("utf-8"), idxs) for literal, idxs in literals]
    groups = [Group(g.char.encode("utf-8"), _anchor_regex_bytes(g.char, tuple(lit for lit, _ in g.literals)), g.sparse,
                    lits(g.literals)) for g in plan.anchored]
    return Plan(groups, lits(plan.direct), tuple(lits(plan.spanning)))


@functools.lru_cache(maxsize=256)
def _anchor_regex_bytes(char: str, literals: tuple[str, ...]) -> re.Pattern:
    """`_anchor_regex` over UTF-8 bytes: its pattern encoded (re.escape escapes only ASCII
    characters, and a multi-byte character is never followed by a quantifier there)."""
    return re.compile(_anchor_regex(char, literals).pattern.encode("utf-8"))


@functools.lru_cache(maxsize=16)
def prefilter_for(matchers: tuple) -> Prefilter:
    """The prefilter of a compiled rule set (an engine.Matcher tuple), made once."""
    return Prefilter([m.literal for m in matchers])
