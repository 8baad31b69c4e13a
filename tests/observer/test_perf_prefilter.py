"""The speed-ups of the observer's search (issue 14.4) change no result: the literal tree of an
anchor's regex, the plan's second look at common anchors, the lines left out because their rules
certainly find nothing there, and a log file's reads served from the buffer being walked."""
from __future__ import annotations

import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_observer_prefilter import TEXTS, TRAFFIC

from selfheal.handlers.observer import engine
from selfheal.handlers.observer import literals as literal_search
from selfheal.handlers.observer.engine import read_and_scan
from selfheal.handlers.observer.logfile import open_log
from selfheal.handlers.observer.logtext import LogText
from selfheal.handlers.observer.anchors import anchor_regex, anchors_in
from selfheal.handlers.observer.prefilter import Prefilter, encoded
from selfheal.handlers.observer.rules import builtin_ruleset

MATCHERS = builtin_ruleset().matchers


def _anchored_at(char: str, literals: tuple[str, ...], text: str) -> list[int]:
    """Where `char` occurs as the anchor of one of `literals` (the occurrence of `char` in it
    that anchors.anchors_in chose), by brute force."""
    at = anchors_in(char, literals)
    return [i for i, c in enumerate(text) if c == char and any(
        text.startswith(lit, i - at[lit]) and i >= at[lit] for lit in literals)]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text("ab c(]\\^-", min_size=1, max_size=6), min_size=1, max_size=5),
       st.text("ab c(]\\^-\n", max_size=60))
def test_the_anchor_regex_matches_where_a_literal_holds_its_anchor(literals, text):
    char = literals[0][0]
    literals = tuple(dict.fromkeys(lit for lit in literals if char in lit))
    regex = anchor_regex(char, literals)
    found, pos = [], 0
    while (m := regex.search(text, pos)) is not None:
        found.append(m.start())
        pos = m.start() + 1
    assert found == _anchored_at(char, literals, text)


def _lines_held(literals: list[str], text: str, data) -> dict[int, set[int]]:
    """Line start -> the literals (by index) that LiteralSearch notes for `data` (`text`, or its
    UTF-8 bytes) with every literal anchored, each group reached both ways (regex scan and find)."""
    plan = Prefilter(literals).plan(text, text, anchored=True)
    if not isinstance(data, str):
        plan = encoded(plan)
    out = {}
    for sparse in (False, True):
        search = literal_search.LiteralSearch.__new__(literal_search.LiteralSearch)
        search.lines, search.nl = {}, data[:0] + (b"\n" if isinstance(data, bytes) else "\n")
        search.dense, search.sparse = ([], plan.anchored) if sparse else (plan.anchored, [])
        search.direct, search.spanning, search.simple, search.next_of = plan.direct, (), frozenset(), {}
        search.log = None
        search._quiet = lambda *args: False
        search(data, 0, 0, len(data))
        out[sparse] = search.lines
    assert out[False] == out[True]
    # positions in bytes, as the text's
    if isinstance(data, bytes):
        return {len(data[:start].decode("utf-8")): idxs for start, idxs in out[False].items()}
    return out[False]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.text("abé c(]\\^-", min_size=1, max_size=7), min_size=1, max_size=8),
       st.text("abé c(]\\^-\n", max_size=80))
def test_each_line_is_noted_with_every_literal_it_holds(literals, text):
    # literals that begin, end or hold each other at the anchor: one occurrence may end several,
    # which the anchor's regex names only the first of (Group.leaves tells the rest)
    literals = list(dict.fromkeys(literals))
    expected = {}
    start = 0
    for line in text.split("\n"):
        held = {i for i, lit in enumerate(literals) if lit in line}
        if held:
            expected[start] = held
        start += len(line) + 1
    for data in (text, text.encode("utf-8")):
        assert _lines_held(literals, text, data) == expected


def test_literals_that_end_at_one_place_are_looked_behind_once_where_the_text_differs():
    # five literals that end with the "y" of "memory": one lookbehind for the character before
    # the "y" guards them at every other "y" (of "loggers.py:"), where each had its own
    literals = ("DA out of memory", "U out of memory", "ree memory", "rror: out of memory", "total memory:")
    pattern = anchor_regex("y", literals).pattern
    assert pattern.startswith("y(?:(?<=ry)(?:") and pattern.count("(?<=") == 6
    assert all(anchor_regex("y", literals).search(lit) for lit in literals)
    assert not anchor_regex("y", literals).search("loggers.py: 9 ry")


def test_shared_beginnings_are_merged_and_only_the_part_before_the_anchor_is_a_lookbehind():
    pattern = anchor_regex("u", ("GPU KV cache usage: 9", "GPU KV cache usage: 100", "rror: out of memory")).pattern
    tree = re.sub(r"\(\?<=[^)]*\)", "", pattern)  # without the lookbehinds
    assert tree.count("sage:") == 1 and "(?=" not in pattern and pattern.count("(?<=") == 3


def test_rare_anchors_are_preferred_to_a_common_one_that_holds_every_literal():
    # every literal holds "e", common in the text; each also holds a rare character of its own.
    # One scan for "e" by the regex engine costs more than four memchr passes for the rare ones
    literals = ["zebra one", "quake two", "jolly three", "vexed four"]
    text = "\n".join(f"INFO the server sent the reply {i} to our host" for i in range(20_000))
    plan = Prefilter(literals).plan(text, LogText(text).sample)
    assert all(g.sparse for g in plan.anchored) and not plan.direct
    assert sorted(lit for g in plan.anchored for lit, _ in g.literals) == sorted(literals)
    assert not {g.char for g in plan.anchored} & set(text)
    assert len(plan.anchored) <= len(literals)


def _long_log(rnd: random.Random) -> str:
    """Traffic whose stats lines hold the KV-pressure literal without matching it (9.x%),
    some that match (9x%), and every sample spliced in."""
    lines = []
    for i, text in enumerate(TEXTS):
        for j in range(30):
            kv = rnd.choice(["9.5", "9.0", "4.5", "95.5", "99.1", "9.9"])
            lines.append(TRAFFIC[1].replace("4.5%", kv + "%") if j % 3 else TRAFFIC[0])
        lines.append(text)
    return "\n".join(lines)


@pytest.mark.parametrize("seed", [1, 2])
def test_lines_left_out_as_finding_nothing_change_no_hit(seed, tmp_path, monkeypatch):
    text = _long_log(random.Random(seed))
    path = tmp_path / "vllm.log"
    path.write_text(text, encoding="utf-8")

    def hits():
        out = []
        for log in (text, text.encode("utf-8"), path):
            if log is path:
                with open_log(path) as fb:
                    found = read_and_scan(fb, MATCHERS)
            else:
                found = read_and_scan(log, MATCHERS)
            out.append([(h.matcher.rule.id, h.key, h.evidence, h.numbers) for h in found])
        return out

    calls = []
    real = engine._finds_nothing
    for module in (engine, literal_search):  # the literal search leaves lines out, and so does the scan
        monkeypatch.setattr(module, "_finds_nothing", lambda *a: calls.append(real(*a)) or calls[-1])
    fast = hits()
    assert sum(calls) > 100  # most stats lines were left out
    for module in (engine, literal_search):
        monkeypatch.setattr(module, "_finds_nothing", lambda *a: False)
    assert fast == hits()
    assert fast[0] == fast[1] == fast[2] and any(rule == "vllm.log.kv_cache_pressure" for rule, *_ in fast[0])


def test_reads_of_a_log_file_while_it_is_walked_agree_with_its_bytes(tmp_path):
    rnd = random.Random(5)
    data = "\n".join(rnd.choice(TRAFFIC + ["", "x", "é"]) for _ in range(30_000)).encode("utf-8")
    path = tmp_path / "vllm.log"
    path.write_bytes(data)
    with open_log(path) as fb:
        for buf, base, a, b in fb.chunks(1 << 16):
            for _ in range(20):
                s, e = sorted(rnd.randrange(0, len(data) + 1) for _ in range(2))
                near = rnd.randrange(max(0, base + a - 300), min(len(data), base + b + 300) + 1)
                for lo, hi in ((s, e), (near, min(len(data), near + 200)), (max(0, near - 200), near)):
                    assert fb.find(b"\n", lo, hi) == data.find(b"\n", lo, hi)
                    assert fb.find(b"\n", lo) == data.find(b"\n", lo)
                    assert fb.rfind(b"\n", lo, hi) == data.rfind(b"\n", lo, hi)
                    assert fb.rfind(b"\n", 0, hi) == data.rfind(b"\n", 0, hi)
                    assert fb[lo:hi] == data[lo:hi]


def test_learnt_headers_leave_out_only_blanks_the_header_regex_does_not_need():
    from selfheal.handlers.observer import logtext, normalize
    probe = "\n".join(["(APIServer pid=7) INFO x"] * 3 + ["(EngineCore_DP0 pid=8)   WARNING y"] * 3)
    heads = logtext._headers(probe)
    assert "(APIServer pid=7)" in heads
    for head in heads:
        assert head == head.rstrip(" \t") and normalize._HARD_START_RE.match(head + "anything")
    assert not re.search(r"[ \t]$", "".join(heads))
