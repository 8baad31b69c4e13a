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
a literal to `str.find` ("direct") when no anchor is cheaper; then each anchor is tried
without (its literals covered again by the others), since the greedy cover may take one early
that those chosen later make needless. Whichever is chosen, exactly the
lines that hold a literal are reported, so the plan changes speed, never results. Short texts
are searched directly: planning would cost more than it saves.

A literal with a newline in it spans lines: it is never anchored, and is searched directly over
the whole text (`Plan.spanning`).
"""
from __future__ import annotations

import functools
from typing import NamedTuple

from selfheal.handlers.observer.anchors import (Group, anchor_leaves, anchor_regex_bytes, before_anchor, bytes_safe,
                                                make_group)

#: estimated costs in nanoseconds, measured with CPython 3.11 on the 100 MB log of
#: bench/observer.py searched 128 KiB at a time (only their ratios matter). Per character of
#: text: a `find` of one character (memchr), and the regex engine's scan for its first
#: character (a plain loop, seven times slower). Per occurrence of the anchor: reached by `find`
#: (a Python step, then a regex match there), or inside the regex engine's scan (the test of
#: the character after it); then per literal tried where that character is one that a literal
#: of the group has after its anchor. The occurrence costs were measured inside a whole read
#: (engine.read), where the piece is in cache: a "f" reached by `find` at each of 100,000 stats
#: lines took 41 ms, the scan for "u" 49 ms with 14 literals and 57 ms with 32
SCAN_NS, SRE_NS = 0.035, 0.26
SPARSE_HIT_NS, SRE_HIT_NS, SRE_ALT_NS = 400.0, 30.0, 2.0
#: an occurrence reached by `find` whose character before it is none that the group's literals
#: have before their anchor is passed over without the regex (`Group.before`): the `find` and
#: that test, scaled from the whole step as measured on the 103,000 "y" of "loggers.py:" in
#: bench/observer.py's log (170 of 295 ns)
SPARSE_GUARD_NS = 230.0
#: a literal that ends one or two characters after its anchor is looked behind wherever the
#: anchor and those characters are (an alternative entered, then the lookbehind): about this
#: much each time ("Starting profile run" at its "u": the "un" of "Running" on every stats line
#: of bench/observer.py's log, 2.5 ms of the "u" scan for 100,000 of them)
LOOK_NS, LOOK_TAIL = 25.0, 2
#: a `str.find` of a string costs about FIND_NS / len(string) per character of text (it skips
#: ahead by up to its length), and no less than FIND_MIN_NS
FIND_NS, FIND_MIN_NS = 5.0, 0.1
#: making a plan: counting one character in the sample, per character of the sample; and the
#: cover worked out from the counts, per anchor and literal (0.7 ms for the built-in rules)
COUNT_NS, PLAN_NS = 0.3, 150.0


def find_cost(literal: str, n: int) -> float:
    return n * max(FIND_MIN_NS, FIND_NS / len(literal))


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
        # the characters that follow each anchor in its literals ("" where one ends with it)
        self.after: dict[str, set[str]] = {ch: set() for ch in self.masks}
        for literal, _ in self.literals:
            if "\n" not in literal:
                for ch in dict.fromkeys(literal):
                    self.after[ch].add(literal[literal.index(ch) + 1:][:1])
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
        planning = len(self.masks) * (len(sample) * COUNT_NS + len(self.literals) * PLAN_NS)
        if anchored is False or anchored is None and n * self.direct_ns < planning:
            return self.short  # a short text: planning would cost more than it saves
        direct = [find_cost(literal, n) for literal, _ in self.literals]
        scale = n / max(len(sample), 1)
        costs = _Costs(self, n, {ch: sample.count(ch) * scale for ch in self.masks}, sample, scale)
        groups = costs.cover(self.masks, self.anchorable, {}, None if anchored is None else direct)
        # the greedy cover is short-sighted: a common anchor taken for many literals at once may
        # cost more than the rare ones it saved (four rare anchors at 3.5 ms for 100 MB, against one
        # common one at 30 ms), and an anchor taken for many literals early may cost more than
        # adding them to a common one that later ones need anyway (a "f" reached with `find` at
        # every stats line, 25 ms, for literals that the "u" scan chosen next tries for 1 ms).
        # Each anchor in turn, the dearest first: its literals covered again without it, kept
        # when that costs less
        for ch in sorted(groups, key=lambda c: -costs.group(c, groups[c])[0]):
            if ch in groups:
                rest = {c: m for c, m in groups.items() if c != ch}
                others = {c: m for c, m in self.masks.items() if c != ch}
                trial = costs.cover(others, groups[ch], rest, None if anchored is None else direct)
                if costs.total(trial, self.anchorable) < costs.total(groups, self.anchorable):
                    groups = trial
        groups = self._moved(groups, costs, sample, scale)
        covered, anchors = 0, []
        for ch, mask in groups.items():
            literals = [self.literals[k] for k in range(mask.bit_length()) if mask >> k & 1]
            anchors.append(make_group(ch, costs.group(ch, mask)[1], literals))
            covered |= mask
        return Plan(anchors, [lit for k, lit in enumerate(self.literals) if not covered >> k & 1 and "\n" not in lit[0]],
                    self.short.spanning)

    def _moved(self, groups: dict[str, int], costs: _Costs, sample: str, scale: float) -> dict[str, int]:
        """`groups` with each literal that a scan looks behind for at every occurrence of a short
        tail (LOOK_TAIL) moved to another scan of the plan that holds it without one, where the
        tail is common: the costs above see how often a literal's next character follows its
        anchor, not how often its end does. Only the few such literals are counted in `sample`."""
        dense = [ch for ch, mask in groups.items() if not costs.group(ch, mask)[1]]
        for ch in dense:
            for k, literal in enumerate(lit for lit, _ in self.literals):
                at = literal.find(ch)
                if not groups[ch] >> k & 1 or at < 0 or not 0 < len(literal) - at - 1 <= LOOK_TAIL \
                        or groups[ch] == 1 << k:
                    continue
                # another scan that holds it away from its end
                there = [c for c in dense if c != ch and 0 <= literal.find(c) < len(literal) - 1 - LOOK_TAIL]
                if there and sample.count(literal[at:]) * scale * LOOK_NS > costs.rates[there[0]][2]:
                    groups = dict(groups)
                    groups[ch] &= ~(1 << k)
                    groups[there[0]] |= 1 << k
        return groups

    def scans_needed_by(self, plan: Plan, sample: str, n: int) -> dict[str, list[str]]:
        """For each anchor of `plan` (this prefilter's plan for a text of `n` characters, its
        characters counted in `sample`) reached by the regex engine's scan (a pass over the whole
        text: SRE_NS a character, most of a long log's time), the literals that keep it: those of
        its group that hold neither the anchor of another such scan nor a character that a memchr
        pass would reach for less than this scan costs (by the estimates above), and then those
        that, planned again without the anchor and those literals, would need a scan that `plan`
        lacks: a scan for the stats line's "V" takes the place of the one for "u" if only "Auto
        set (" is reworded. Reworded together, with characters other passes reach, they end the
        scan with none in its place (some only together: one stats literal alone would ride a
        memchr pass); until then it stays. What literals of common letters cost, for whoever
        writes one (bench/observer.py prints it)."""
        scale = n / max(len(sample), 1)
        cost = {g.char: n * SRE_NS + sample.count(g.char) * scale * SRE_HIT_NS for g in plan.anchored if not g.sparse}
        out = {}
        for group in plan.anchored:
            if group.sparse:
                continue
            anchor = group.char
            needed = [lit for lit, _ in group.literals if not any(
                ch != anchor and (ch in cost or n * SCAN_NS + sample.count(ch) * scale * SPARSE_HIT_NS < cost[anchor])
                for ch in set(lit))]
            # the others, planned again without the anchor: those that a scan the plan lacks then
            # takes are needed too, until none is
            while True:
                without = Prefilter([lit for lit, idxs in self.literals if lit not in needed for _ in idxs])
                without.masks = {ch: mask for ch, mask in without.masks.items() if ch != anchor}
                without.after = {ch: after for ch, after in without.after.items() if ch != anchor}
                without.anchorable = functools.reduce(int.__or__, without.masks.values(), 0)
                more = [lit for g in without.plan(range(n), sample).anchored if not g.sparse and g.char not in cost
                        for lit, _ in g.literals if lit in dict(group.literals)]
                if not more:
                    break
                needed += more
            out[anchor] = [lit for lit, _ in group.literals if lit in needed]
        return out


class _Costs:
    """The estimated costs of searching one text through each anchor, for a plan."""

    def __init__(self, prefilter: Prefilter, n: int, occurrences: dict[str, float], sample: str = "",
                 scale: float = 0.0):
        self.masks, self.direct = prefilter.masks, [find_cost(literal, n) for literal, _ in prefilter.literals]
        self.prefilter, self.sample, self.scale, self.n = prefilter, sample, scale, n
        self.occurrences = occurrences
        self._pairs: dict[str, dict[str, tuple[int, float]] | None] = {}
        # anchor -> (through `find`, through the regex engine: fixed, and per literal of the group)
        self.rates: dict[str, tuple[float, float, float]] = {}
        for ch, after in prefilter.after.items():
            hits = occurrences[ch]
            # the regex engine tests the character after each occurrence (anchors.py) and
            # tries the literals only where it is one of theirs: how often, guessed from how
            # common those characters are (a literal that ends with the anchor is tried everywhere)
            share = 1.0 if "" in after else min(1.0, sum(occurrences.get(c, 0.0) for c in after) / max(n, 1))
            self.rates[ch] = (n * SCAN_NS + hits * SPARSE_HIT_NS, n * SRE_NS + hits * SRE_HIT_NS,
                              hits * share * SRE_ALT_NS)

    def group(self, ch: str, mask: int) -> tuple[float, bool]:
        """(cost, sparse) of searching the literals in `mask` through `ch`, the cheaper way."""
        sparse, fixed, each = self.rates[ch]
        dense = fixed + each * mask.bit_count()
        hits = self.occurrences[ch]
        if sparse > dense and self.n * SCAN_NS + hits * SPARSE_GUARD_NS < dense:
            # the occurrences after a character that none of these literals has before `ch`
            # cost only the `find` and that test (Group.before): how many, from the sample
            pairs = self._before(ch)
            if pairs is not None:
                passed = sum(count for lits, count in pairs.values() if lits & mask)
                sparse = self.n * SCAN_NS + hits * SPARSE_GUARD_NS \
                    + min(hits, passed) * (SPARSE_HIT_NS - SPARSE_GUARD_NS)
        return (sparse, True) if sparse <= dense else (dense, False)

    def _before(self, ch: str) -> dict[str, tuple[int, float]] | None:
        """For `ch`: each character that comes before it in a literal -> (those literals, as a mask;
        how often that pair is in the text, estimated from the sample); None where a literal
        begins with `ch` (nothing to pass over)."""
        if ch not in self._pairs:
            pairs: dict[str, tuple[int, float]] | None = {}
            for k, (literal, _) in enumerate(self.prefilter.literals):
                if "\n" in literal or ch not in literal:
                    continue
                if literal.startswith(ch):
                    pairs = None
                    break
                for i in range(1, len(literal)):
                    if literal[i] == ch:
                        c = literal[i - 1]
                        lits, count = pairs.get(c, (0, None))
                        if count is None:
                            count = self.sample.count(c + ch) * self.scale
                        pairs[c] = (lits | 1 << k, count)
            self._pairs[ch] = pairs
        return self._pairs[ch]

    def total(self, groups: dict[str, int], literals: int) -> float:
        """The cost of searching `literals` (a mask) through `groups`, those left out by themselves."""
        covered = functools.reduce(int.__or__, groups.values(), 0)
        alone = literals & ~covered
        return sum(self.group(ch, mask)[0] for ch, mask in groups.items()) + \
            sum(self.direct[k] for k in range(alone.bit_length()) if alone >> k & 1)

    def cover(self, masks: dict[str, int], uncovered: int, groups: dict[str, int], forced: list | None) -> dict[str, int]:
        """`groups` with the literals in `uncovered` added, by a greedy weighted set cover: the
        anchor in `masks`, or a literal by itself, that costs least per literal it newly covers. An
        anchor already in `groups` costs only what its new literals add: once a common character
        is scanned for, more literals that hold it come cheap. `forced` (not None) anchors every
        literal that has an anchor."""
        groups = dict(groups)
        while uncovered:
            best = None
            for ch, mask in masks.items():
                new = mask & uncovered
                if new:
                    old = groups.get(ch, 0)
                    extra = self.group(ch, old | new)[0] - (self.group(ch, old)[0] if old else 0.0)
                    if best is None or extra / new.bit_count() < best[0]:
                        best = (extra / new.bit_count(), ch, new)
            alone = min((k for k in range(uncovered.bit_length()) if uncovered >> k & 1), key=self.direct.__getitem__)
            if best is None or forced is None and self.direct[alone] < best[0]:
                uncovered &= ~(1 << alone)  # searched by itself
                continue
            _, ch, new = best
            groups[ch] = groups.get(ch, 0) | new
            uncovered &= ~new
        return groups


def encoded(plan: Plan) -> Plan:
    """`plan` for a text kept as UTF-8 bytes: the same groups and literals, as bytes. UTF-8 is
    self-synchronising, so a literal's bytes occur exactly where the literal does."""
    def lits(literals):
        for literal, _ in literals:
            if not bytes_safe(literal):
                raise ValueError(f"literal {literal!r} cannot be searched for in bytes")
        return [(literal.encode("utf-8"), idxs) for literal, idxs in literals]
    groups = []
    for g in plan.anchored:
        literals = tuple(lit for lit, _ in g.literals)
        groups.append(Group(g.char.encode("utf-8"), anchor_regex_bytes(g.char, literals), g.sparse, lits(g.literals),
                            anchor_leaves(g.char, tuple(g.literals), True), before_anchor(g.char, literals, True)))
    return Plan(groups, lits(plan.direct), tuple(lits(plan.spanning)))


@functools.lru_cache(maxsize=16)
def prefilter_for(matchers: tuple) -> Prefilter:
    """The prefilter of a compiled rule set (an engine.Matcher tuple), made once."""
    return Prefilter([m.literal for m in matchers])
