"""What a literal of common letters costs (issue 14.4): the regex-engine scans of a whole log that
a plan needs, and the literals that make each needed (Prefilter.scans_needed_by, printed by
bench/observer.py), so that whoever writes a rule sees which literal keeps a scan."""
from __future__ import annotations

from selfheal.handlers.observer.logtext import LogText
from selfheal.handlers.observer.prefilter import Prefilter

#: traffic in which every letter of the literals below is common, but "q" and "z"
TEXT = "\n".join(f"INFO the server sent the reply {i} to our host" for i in range(20_000))


def _needed(literals: list[str]) -> tuple[list, dict[str, list[str]]]:
    sample = LogText(TEXT).sample
    plan = Prefilter(literals).plan(TEXT, sample)
    return plan.anchored, Prefilter.scans_needed_by(plan, sample, len(TEXT))


def test_a_scan_is_needed_by_the_literals_made_only_of_common_letters():
    common = ["the sent", "server to", "reply host", "our server", "host the", "sent our"]
    groups, needed = _needed(["zebra one", *common, "quiet host"])
    (char,) = needed  # one regex-engine scan, for the common letters
    assert char in TEXT and not next(g for g in groups if g.char == char).sparse
    # "quiet host" rides on that scan here, but a memchr pass for "q" would reach it for less;
    # "zebra one" has its own memchr pass
    assert "quiet host" in [lit for g in groups if g.char == char for lit, _ in g.literals]
    assert needed[char] == common


def test_a_literal_that_holds_the_anchors_of_two_scans_needs_neither():
    with_v = ["e serve", "erver s", "rver se", "ver sen"]
    with_l = ["eply to", "reply t", "ply to o", "ly to ou"]
    _, needed = _needed([*with_v, *with_l, "server sent the reply", "quiet host"])
    assert sorted(needed) == ["l", "v"]
    assert needed["v"] == with_v and needed["l"] == with_l
