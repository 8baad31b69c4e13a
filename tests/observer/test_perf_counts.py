"""The speed-ups of issue 14.4's third round change no result: newlines counted with memchr
(logtext.count_newlines), the planner reconsidering every anchor it took (a rare character
reached with `find` on every stats line is dearer than the scan that a common one needs
anyway), and rules that share a pattern searching a candidate line once (matching.Regexes)."""
from __future__ import annotations

import random
import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st

from selfheal.handlers.observer import diagnose, logtext
from selfheal.handlers.observer.logtext import count_newlines
from selfheal.handlers.observer.matching import Regexes, finds_nothing
from selfheal.handlers.observer.prefilter import Prefilter
from selfheal.handlers.observer.rules import builtin_ruleset

MATCHERS = builtin_ruleset().matchers
ACCESS = '(APIServer pid=99) INFO:     127.0.0.1:{port} - "POST /v1/chat/completions HTTP/1.1" 200 OK'
STATS = ("(APIServer pid=99) INFO 11-24 06:00:09 [loggers.py:123] Engine 000: Avg prompt throughput: 50.0 "
         "tokens/s, Avg generation throughput: 20.0 tokens/s, Running: 3 reqs, Waiting: 0 reqs, "
         "GPU KV cache usage: {kv}%, Prefix cache hit rate: 4.5%")
OOM = ("ERROR 11-24 06:55:12 [core.py:700] torch.OutOfMemoryError: CUDA out of memory. Tried to allocate "
       "2.00 GiB. GPU 0 has a total capacity of 79.19 GiB of which 1.05 GiB is free.")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300).map(lambda b: b.replace(b"\x00", b"\n")), st.integers(0, 300), st.integers(0, 300),
       st.booleans())
def test_newlines_are_counted_as_bytes_count_counts_them(data, a, b, dense):
    a, b = min(a, b, len(data)), min(max(a, b), len(data))
    for buf in (data, bytearray(data), data.decode("latin-1")):
        assert count_newlines(buf, a, b, dense) == buf.count("\n" if isinstance(buf, str) else b"\n", a, b)


def test_newlines_are_counted_in_windows_that_keep_a_huge_line_cheap(monkeypatch):
    rnd = random.Random(7)
    data = bytes(rnd.choice(b"ab\n") for _ in range(5000))
    monkeypatch.setattr(logtext, "MEMCHR_COUNT_BYTES", 64)
    for _ in range(200):
        a, b = sorted(rnd.randrange(len(data) + 1) for _ in range(2))
        assert count_newlines(data, a, b) == data.count(b"\n", a, b)
    monkeypatch.undo()
    line = b"x" * (40 << 20) + b"\n"  # one 40 MB line: counted a window at a time, not copied whole
    tracemalloc.start()
    try:
        assert count_newlines(line, 0, len(line)) == 1
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 * logtext.MEMCHR_COUNT_BYTES, peak


def test_line_numbers_hold_where_short_lines_switch_the_count(tmp_path, monkeypatch):
    # blank lines (counted byte by byte) between stretches of traffic (counted with memchr), in
    # pieces small enough that the way of counting changes many times
    monkeypatch.setattr(logtext, "CHUNK_CHARS", 4096)
    rnd = random.Random(3)
    lines: list[str] = []
    for stretch in range(12):
        lines += [""] * rnd.randrange(1, 9000) if stretch % 2 else \
            [ACCESS.format(port=30000 + i) for i in range(rnd.randrange(1, 3000))]
        lines.append(OOM)
    text = "\n".join(lines) + "\n"
    path = tmp_path / "vllm.log"
    path.write_text(text, encoding="utf-8")
    want = [i + 1 for i, line in enumerate(lines) if line == OOM]
    for log in (path, text.encode("utf-8"), text):
        d = diagnose(log)
        seen = [f.line for f in d.findings] + [x for r in d.repeated for x in (r.first_line, r.last_line)]
        assert d.primary.line == want[-1] and want[0] in seen and set(seen) <= set(want), log.__class__


def test_a_rare_anchor_on_every_stats_line_gives_way_to_the_scan_needed_anyway():
    # the built-in literals, one of them changed to hold a character ("w") that traffic lacks: the
    # stats line's "f" (Prefix) then anchors many literals that the scan for "u" (needed for
    # "Auto set (") can take; reaching 10,000 stats lines with `find` would cost more
    literals = [m.literal.replace("torch peak memory increase:", "forward increase memory") for m in MATCHERS]
    assert literals != [m.literal for m in MATCHERS]
    lines = [STATS.format(kv=i % 80) if i % 10 == 9 else ACCESS.format(port=30000 + i) for i in range(100_000)]
    text = "\n".join(lines)
    plan = Prefilter(literals).plan(text, logtext.sample(text))
    on_stats_lines = {ch for ch in set(STATS) if ch not in ACCESS}
    # ... unless each of them there follows a character that none of the group's literals has
    # before its anchor: `find` then passes it over without the regex (Group.before), as the
    # "y" of "loggers.py:" (a scan over the whole log costs more than 10,000 such steps)
    after = {ch: {STATS[i - 1] for i, c in enumerate(STATS) if c == ch} for ch in on_stats_lines}
    assert not [g.char for g in plan.anchored if g.sparse and g.char in on_stats_lines
                and (g.before is None or after[g.char] & g.before)]
    assert {"u", "l"} <= {g.char for g in plan.anchored if not g.sparse} and not plan.direct


def test_rules_that_share_a_pattern_search_a_line_once():
    ids = {m.rule.id: i for i, m in enumerate(MATCHERS)}
    pair = frozenset({ids["vllm.log.kv_cache_pressure"], ids["vllm.ctx.stats_near_full"]})
    assert MATCHERS[min(pair)].regexes == MATCHERS[max(pair)].regexes  # what this relies on
    regexes = Regexes(MATCHERS)
    assert len(regexes[pair]) == len(MATCHERS[min(pair)].regexes)
    calm, full = STATS.format(kv="9.5"), STATS.format(kv="95.5").replace("Waiting: 0", "Waiting: 4")
    assert finds_nothing(regexes, set(pair), calm, None)
    assert not finds_nothing(regexes, set(pair), full, None)


def test_a_literal_looked_behind_at_every_stats_line_rides_another_scan():
    # "Starting profile run" anchored at its "u" is looked behind at the "un" of "Running" on every
    # stats line; the scan for "l", which the plan has anyway, holds it where what follows is rare
    lines = [STATS.format(kv=i % 80) if i % 10 == 9 else ACCESS.format(port=30000 + i) for i in range(100_000)]
    text = "\n".join(lines)
    plan = Prefilter([m.literal for m in MATCHERS]).plan(text, logtext.sample(text))
    scans = {g.char for g in plan.anchored if not g.sparse}
    held = {lit: g.char for g in plan.anchored for lit, _ in g.literals}
    assert {"u", "l"} <= scans and held["Starting profile run"] in scans - {"u"}
