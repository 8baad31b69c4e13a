"""An anchor's group: the regex by which one character reaches the literals that hold it
(`anchor_regex`), what each of its matches names (`Group.leaves`), and the characters before it
that a `find` loop may pass over (`Group.before`). prefilter.py plans which characters anchor
which literals; literals.py searches with the groups.
"""
from __future__ import annotations

import functools
import re
from typing import NamedTuple

__all__ = ["Group", "Leaf", "anchor_regex", "anchor_regex_bytes", "anchor_leaves", "anchors_in", "before_anchor",
           "bytes_safe", "make_group"]


class Group(NamedTuple):
    char: str
    regex: re.Pattern
    sparse: bool  # reach the occurrences with str.find, not with the regex engine's scan
    literals: list[tuple[str, tuple[int, ...]]]
    #: what a match of `regex` at an occurrence says, by its `lastindex` (`anchor_leaves`)
    leaves: tuple[Leaf | None, ...] = ()
    #: the characters (of bytes: the byte values) that come right before the anchor in the
    #: literals, or None where one begins with it: an occurrence after any other cannot be
    #: one of theirs, and a `find` loop passes it over without the regex (`before_anchor`)
    before: frozenset | None = None


class Leaf(NamedTuple):
    """The literal whose end a match of an anchor's regex reached (an empty group there names it),
    with its matchers, and the literals of the group that may hold the same occurrence of the
    anchor too (the regex stops at the first), each with where the anchor is in it: at an
    occurrence, the literals there are this one and those of `also` that start where theirs would."""
    idxs: tuple[int, ...]
    also: tuple[tuple[str | bytes, int, tuple[int, ...]], ...]


def make_group(char: str, sparse: bool, literals: list[tuple[str, tuple[int, ...]]]) -> Group:
    return Group(char, anchor_regex(char, tuple(lit for lit, _ in literals)), sparse, literals,
                 anchor_leaves(char, tuple(literals)), before_anchor(char, tuple(lit for lit, _ in literals)))


@functools.lru_cache(maxsize=256)
def before_anchor(char: str, literals: tuple[str, ...], utf8: bool = False) -> frozenset | None:
    """`Group.before`: the character before `char` where each literal is anchored (`anchors_in`), as
    the last byte of its UTF-8 when `utf8`; None where a literal is anchored at its start."""
    at = anchors_in(char, literals)
    if any(at[lit] == 0 for lit in literals):
        return None
    if utf8:
        return frozenset(lit[:at[lit]].encode("utf-8")[-1] for lit in literals)
    return frozenset(lit[at[lit] - 1] for lit in literals)


@functools.lru_cache(maxsize=256)
def anchor_leaves(char: str, literals: tuple[tuple[str, tuple[int, ...]], ...], utf8: bool = False) -> tuple:
    """`Group.leaves`: for each literal, in the order of the empty groups that end them in the
    anchor's regex, its matchers and the literals that can hold the same occurrence of `char`:
    those whose part after the anchor begins the other's, or is begun by it, and whose part before
    it ends the other's, or is ended by it (as UTF-8 bytes, with byte offsets, when `utf8`)."""
    idxs = dict(literals)
    encode = _utf8 if utf8 else None
    at = anchors_in(char, tuple(lit for lit, _ in literals))
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
def anchor_regex(char: str, literals: tuple[str, ...]) -> re.Pattern:
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
    """`anchor_regex`'s pattern, and the literals in the order of the empty groups that end them."""
    tree: dict = {}
    at = anchors_in(char, literals)
    for literal in literals:
        k = at[literal]
        node = tree
        for ch in literal[k + 1:]:
            node = node.setdefault(ch, {})
        node.setdefault("", set()).add(literal if k else "")
    order: list[str] = []
    return re.escape(char) + _tree_regex(tree, char, order), tuple(order)


@functools.lru_cache(maxsize=256)
def anchors_in(char: str, literals: tuple[str, ...]) -> dict[str, int]:
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


def _utf8(text: str) -> bytes:
    return text.encode("utf-8")


@functools.lru_cache(maxsize=256)
def anchor_regex_bytes(char: str, literals: tuple[str, ...]) -> re.Pattern:
    """`anchor_regex` over UTF-8 bytes: its pattern encoded (re.escape escapes only ASCII
    characters, and a multi-byte character is never followed by a quantifier there)."""
    return re.compile(anchor_regex(char, literals).pattern.encode("utf-8"))
