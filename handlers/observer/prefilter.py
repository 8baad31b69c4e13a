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
import re
from typing import NamedTuple

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


class Group(NamedTuple):
    char: str
    regex: re.Pattern
    sparse: bool  # reach the occurrences with str.find, not with the regex engine's scan
    literals: list[tuple[str, tuple[int, ...]]]
    #: what a match of `regex` at an occurrence says, by its `lastindex` (`_leaves`)
    leaves: tuple[Leaf | None, ...] = ()
    #: the characters (of bytes: the byte values) that come right before the anchor in the
    #: literals, or None where one begins with it: an occurrence after any other cannot be
    #: one of theirs, and a `find` loop passes it over without the regex (`_before`)
    before: frozenset | None = None


class Leaf(NamedTuple):
    """The literal whose end a match of an anchor's regex reached (an empty group there names it),
    with its matchers, and the literals of the group that may hold the same occurrence of the
    anchor too (the regex stops at the first), each with where the anchor is in it: at an
    occurrence, the literals there are this one and those of `also` that start where theirs would."""
    idxs: tuple[int, ...]
    also: tuple[tuple[str | bytes, int, tuple[int, ...]], ...]


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
            anchors.append(_group(ch, costs.group(ch, mask)[1], literals))
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
            # the regex engine tests the character after each occurrence (_anchor_regex) and
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


def _group(char: str, sparse: bool, literals: list[tuple[str, tuple[int, ...]]]) -> Group:
    return Group(char, _anchor_regex(char, tuple(lit for lit, _ in literals)), sparse, literals,
                 _leaves(char, tuple(literals)), _before(char, tuple(lit for lit, _ in literals)))


@functools.lru_cache(maxsize=256)
def _before(char: str, literals: tuple[str, ...], utf8: bool = False) -> frozenset | None:
    """`Group.before`: the character before `char` where each literal is anchored (`_anchors`), as
    the last byte of its UTF-8 when `utf8`; None where a literal is anchored at its start."""
    at = _anchors(char, literals)
    if any(at[lit] == 0 for lit in literals):
        return None
    if utf8:
        return frozenset(lit[:at[lit]].encode("utf-8")[-1] for lit in literals)
    return frozenset(lit[at[lit] - 1] for lit in literals)


@functools.lru_cache(maxsize=256)
def _leaves(char: str, literals: tuple[tuple[str, tuple[int, ...]], ...], utf8: bool = False) -> tuple:
    """`Group.leaves`: for each literal, in the order of the empty groups that end them in the
    anchor's regex, its matchers and the literals that can hold the same occurrence of `char`:
    those whose part after the anchor begins the other's, or is begun by it, and whose part before
    it ends the other's, or is ended by it (as UTF-8 bytes, with byte offsets, when `utf8`)."""
    idxs = dict(literals)
    encode = _utf8 if utf8 else None
    at = _anchors(char, tuple(lit for lit, _ in literals))
    out: list[Leaf | None] = [None]  # group 0 is the whole match
    for literal in _anchor_pattern(char, tuple(lit for lit, _ in literals))[1]:
        k = at[literal]
        also = []
        for other, other_idxs in literals:
            j = at[other]
            if other != literal and (literal[k:].startswith(other[j:]) or other[j:].startswith(literal[k:])) \
                    and (literal[:k].endswith(other[:j]) or other[:j].endswith(literal[:k])):
                also.append((other, j, other_idxs) if encode is None else
                            (encode(other), len(encode(other[:j])), other_idxs))
        out.append(Leaf(idxs[literal], tuple(also)))
    return tuple(out)


@functools.lru_cache(maxsize=256)
def _anchor_regex(char: str, literals: tuple[str, ...]) -> re.Pattern:
    """A regex that matches at an occurrence of `char` that is part of one of `literals`.

    It starts with the character, so that the regex engine's search jumps from one occurrence
    to the next. The rest of each literal after it follows as plain characters, merged into a
    tree where literals share a beginning, so that at an occurrence the engine compares a
    character or two and moves on: the regex engine skips an alternative whose first character
    differs without entering it, while entering a lookaround costs tens of nanoseconds. Only
    the part before the anchor is a lookbehind, checked once all the rest has matched.
    """
    return re.compile(_anchor_pattern(char, literals)[0])


@functools.lru_cache(maxsize=256)
def _anchor_pattern(char: str, literals: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """`_anchor_regex`'s pattern, and the literals in the order of the empty groups that end them."""
    tree: dict = {}
    at = _anchors(char, literals)
    for literal in literals:
        k = at[literal]
        node = tree
        for ch in literal[k + 1:]:
            node = node.setdefault(ch, {})
        node.setdefault("", set()).add(literal if k else "")
    order: list[str] = []
    return re.escape(char) + _tree_regex(tree, char, order), tuple(order)


@functools.lru_cache(maxsize=256)
def _anchors(char: str, literals: tuple[str, ...]) -> dict[str, int]:
    """Where in each literal its group's regex anchors it: at an occurrence of `char` in it. At
    every occurrence in the text the regex engine tests the character after it against each
    distinct one that follows an anchor (2 ns each: 1.7 ms for the 873,000 "l" of the bench's
    log), and enters the branch of one that matches (8 ns); a literal that ends with `char` is
    looked behind at every occurrence. So where a literal holds `char` more than once, the
    occurrence not at its end whose next character other literals' anchors have already, the
    most shared one, else the first."""
    options = {lit: [k for k, c in enumerate(lit) if c == char] for lit in literals}
    options = {lit: [k for k in ks if k + 1 < len(lit)] or ks for lit, ks in options.items()}
    forced = {lit[ks[0] + 1:ks[0] + 2] for lit, ks in options.items() if len(ks) == 1}
    shared: dict[str, int] = {}
    for lit, ks in options.items():
        for nxt in {lit[k + 1:k + 2] for k in ks}:
            shared[nxt] = shared.get(nxt, 0) + 1
    return {lit: min(ks, key=lambda k: (lit[k + 1:k + 2] not in forced, -shared[lit[k + 1:k + 2]], k))
            for lit, ks in options.items()}


def _tree_regex(node: dict, matched: str, order: list[str]) -> str:
    """The regex of a tree node reached through `matched` (the anchor and what follows it); the
    literals that end in it are added to `order` as their empty groups are written."""
    alternatives = []
    ends = node.get("")
    if ends is not None:  # a literal ends here: the part before its anchor, as a lookbehind
        alternatives.append(_lookbehinds(ends, matched, order))
    alternatives.extend(re.escape(ch) + _tree_regex(child, matched + ch, order) for ch, child in node.items() if ch)
    if len(alternatives) == 1 and (ends is None or len(ends) == 1 or "" in ends):
        return alternatives[0]
    return "(?:" + "|".join(alternatives) + ")"


def _lookbehinds(ends: set[str], matched: str, order: list[str]) -> str:
    """The literals that end where `matched` does, each checked by a lookbehind (or none when one
    starts with the anchor). Each lookbehind is entered at every occurrence that gets this far
    (five literals that end with the "y" of "memory" cost five at every "y" of "loggers.py:"):
    several are guarded by one that checks only the character before the anchor, which each of
    them holds, as one class where it can be (an ASCII character is one byte in the bytes regex).
    Each ends with an empty group, which names the literal (`Group.leaves`)."""
    if "" in ends:  # the literal is `matched` itself: the others there are tested by `Leaf.also`
        order.append(matched)
        return "()"
    order.extend(sorted(ends))
    looks = "|".join(f"(?<={re.escape(x)})()" for x in sorted(ends))
    before = sorted({x[-len(matched) - 1] for x in ends})
    if len(ends) == 1 or not all(c.isascii() for c in before):
        return looks
    guard = re.escape(before[0]) if len(before) == 1 else "[" + "".join(map(re.escape, before)) + "]"
    return f"(?<={guard}{re.escape(matched)})(?:{looks})"


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
    groups = []
    for g in plan.anchored:
        literals = tuple(lit for lit, _ in g.literals)
        groups.append(Group(g.char.encode("utf-8"), _anchor_regex_bytes(g.char, literals), g.sparse, lits(g.literals),
                            _leaves(g.char, tuple(g.literals), True), _before(g.char, literals, True)))
    return Plan(groups, lits(plan.direct), tuple(lits(plan.spanning)))


def _utf8(text: str) -> bytes:
    return text.encode("utf-8")


@functools.lru_cache(maxsize=256)
def _anchor_regex_bytes(char: str, literals: tuple[str, ...]) -> re.Pattern:
    """`_anchor_regex` over UTF-8 bytes: its pattern encoded (re.escape escapes only ASCII
    characters, and a multi-byte character is never followed by a quantifier there)."""
    return re.compile(_anchor_regex(char, literals).pattern.encode("utf-8"))


@functools.lru_cache(maxsize=16)
def prefilter_for(matchers: tuple) -> Prefilter:
    """The prefilter of a compiled rule set (an engine.Matcher tuple), made once."""
    return Prefilter([m.literal for m in matchers])
