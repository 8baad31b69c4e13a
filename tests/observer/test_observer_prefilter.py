"""Speed without changed results: the anchor plans, the chunked search for wrapped lines, line
numbers worked out on demand, and evidence bounded on pathological lines."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_observer_healthy import HEALTHY
from test_observer_rules import CASES

from selfheal.handlers.observer import diagnose, logtext, normalize, parse_rules
from selfheal.handlers.observer.rules import builtin_ruleset
from selfheal.handlers.observer.engine import EVIDENCE_CONTEXT, MAX_MATCHES_PER_RECORD, excerpt, scan
from selfheal.handlers.observer.logtext import LogText
from selfheal.handlers.observer.prefilter import Prefilter, prefilter_for

MATCHERS = builtin_ruleset().matchers  # the built-in rules, compiled once

SAMPLES = Path(__file__).parent / "samples"
GOLDEN = json.loads((SAMPLES / "golden_python_rules.json").read_text(encoding="utf-8"))
TEXTS = [c["text"] if "text" in c else (SAMPLES / c["sample"]).read_text(encoding="utf-8") for c in GOLDEN["cases"]]
TRAFFIC = ['(APIServer pid=99) INFO:     127.0.0.1:40000 - "POST /v1/chat/completions HTTP/1.1" 200 OK',
           "(APIServer pid=99) INFO 11-24 06:00:09 [loggers.py:123] Engine 000: Avg prompt throughput: 50.0 "
           "tokens/s, Running: 3 reqs, Waiting: 0 reqs, GPU KV cache usage: 4.5%"]
#: literals a user's rule file may hold: spaces only, a newline inside, one character, non-ASCII
ODD_RULES = parse_rules("".join(
    f'[[rule]]\nid = "odd.{i}"\nkind = "context"\nprefilter = {json.dumps(lit)}\npatterns = [{json.dumps(pat)}]\n'
    f"window = {1 + i % 3}\n" for i, (lit, pat) in enumerate([
        (" ", "[ ]"), ("  ", "\\s\\s"), ("e", "e"), ("GiB", "GiB"), ("x\ny", "x\\ny"), ("s\n ", "s"),
        ("█", "█"), ('File "', 'File "'), ("0\n(", "0"), ("of memory", "of memory"), ("\t", "\t")])))
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _hits(text: str, matchers, anchored: bool | None) -> list:
    log = LogText(text)
    plan = prefilter_for(matchers).plan(log.text, log.sample, anchored=anchored)
    return [(h.matcher.rule.id, h.key, h.evidence, h.numbers) for h in scan(log, matchers, plan=plan)]


def _wrapped(text: str, width: int) -> str:
    return "\n".join("\n".join(x[i:i + width] for i in range(0, len(x), width)) or "" for x in text.split("\n"))


@pytest.mark.parametrize("rules", [MATCHERS, ODD_RULES.matchers], ids=["builtin", "odd"])
def test_every_plan_finds_the_same_records(rules):
    for text in TEXTS + [_wrapped(t, 57) for t in TEXTS[::7]]:
        expected = _hits(text, rules, anchored=False)  # every literal searched by itself
        assert _hits(text, rules, anchored=True) == expected
        assert _hits(text, rules, anchored=None) == expected


FRAGMENTS = [c[1] for c in CASES] + HEALTHY + TRAFFIC + [
    "\n", "\r\n", " ", "  ", "\t", "x", "y", "█", "GiB", "(", "0",
    "(EngineCore_DP0 pid=1) ERROR 11-24 06:55:12 [a.py:1] ", "Traceback (most recent call last):",
    '  File "x.py", line 1, in capture_model', "ValueError: "]


@SETTINGS
@given(st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=12), max_size=30), st.sampled_from([1, 7, 64, 4096]))
def test_plans_and_chunks_agree_on_any_text(parts, chunk):
    text = "".join(parts)
    expected = {rules: _hits(text, rules, anchored=False) for rules in (MATCHERS, ODD_RULES.matchers)}
    # tiny chunks and samples: learned headers and chunk edges everywhere
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(logtext, "CHUNK_CHARS", chunk)
        mp.setattr(logtext, "SAMPLE_PIECES", 2)
        mp.setattr(logtext, "PIECE_CHARS", 48)
        for rules, hits in expected.items():
            assert _hits(text, rules, anchored=True) == hits
            assert _hits(text, rules, anchored=None) == hits


def _long_log() -> str:
    """Mostly traffic, with every sample (some hard-wrapped) spliced in: over the sample size."""
    lines = []
    for i, text in enumerate(TEXTS):
        lines.extend(TRAFFIC[j % 2] for j in range(40))
        lines.append(_wrapped(text, 61) if i % 3 == 0 else text)
    return "\n".join(lines)


def test_a_long_log_reads_as_a_short_one_would():
    text = _long_log()
    assert len(text) > logtext.SAMPLE_PIECES * logtext.PIECE_CHARS and logtext._headers(LogText(text).sample)
    fast = LogText(text)
    assert fast.sample is not text
    with pytest.MonkeyPatch.context() as mp:  # no headers learnt, no chunks: one regex over every line start
        mp.setattr(logtext, "_headers", lambda probe: [])
        plain = LogText(text)
    assert fast._cont == plain._cont and fast._cont
    assert list(fast) and [(r.first, r.raw, r.text) for r in fast] == [(r.first, r.raw, r.text) for r in plain]
    assert _hits(text, MATCHERS, anchored=None) == _hits(text, MATCHERS, anchored=False)


def test_a_wrapped_line_right_before_a_chunk_edge_is_found():
    # the one line that does not start with the header ends where the chunk ends: the header
    # just after the edge belongs to the next chunk and must not make this one look clean
    head = "(APIServer pid=99) "
    text = "\n".join([head + "x" * 70, head + "y" * 70, "continuation of it", head + "z", head + "w" * 200])
    edge = text.index("\n" + head + "z")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(logtext, "SAMPLE_PIECES", 2)
        mp.setattr(logtext, "PIECE_CHARS", 20)
        mp.setattr(logtext, "_headers", lambda probe: [head])
        for chunk in (edge, edge - 1, edge + 1, 7):
            mp.setattr(logtext, "CHUNK_CHARS", chunk)
            log = LogText(text)
            assert log._cont == {text.index("continuation")}, chunk
            assert [r.first for r in log] == [1, 2, 4, 5]


@pytest.mark.parametrize("bare", ["INFO", "2025-11-24 06:55:12", "ERROR"])
def test_a_header_that_ends_its_line_at_a_chunk_edge_still_begins_a_record(bare):
    # a header such as a bare level or timestamp needs the line end after it to match (its
    # trailing [\s:] or \s+): a piece must hand the line's "\n" to the match, wherever it ends
    head = "(APIServer pid=99) "
    text = "\n".join([head + "x" * 70, bare, head + "y" * 70, "not a header, wrapped", head + "z"] * 3)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(logtext, "SAMPLE_PIECES", 2)
        mp.setattr(logtext, "PIECE_CHARS", 20)
        mp.setattr(logtext, "_headers", lambda probe: [head])
        expected = LogText(text)._cont
        assert expected == {m.start() for m in re.finditer("not a header", text)}
        for chunk in range(1, len(text) + 1):
            mp.setattr(logtext, "CHUNK_CHARS", chunk)
            assert LogText(text)._cont == expected, chunk
            assert LogText(text.encode())._cont == expected, chunk


def test_learned_headers_each_begin_a_record():
    heads = logtext._headers(LogText(_long_log()).sample)
    assert "(APIServer pid=99)" in heads  # learnt without its trailing blank, which it needs not
    for head in heads:
        assert normalize._HARD_START_RE.match(head) and normalize._HARD_START_RE.match(head + "x")
        assert not any(other != head and head.startswith(other) for other in heads)


def test_line_numbers_are_counted_in_any_order():
    text = _long_log()
    log = LogText(text)
    positions = [0, len(text), *range(len(text) - 1, 0, -len(text) // 97)]
    for pos in positions + sorted(positions):
        assert log.number(pos) == text.count("\n", 0, pos) + 1


def test_the_plan_anchors_on_characters_rare_in_the_traffic():
    text = _long_log()
    plan = prefilter_for(MATCHERS).plan(text, LogText(text).sample)
    literals = [lit for g in plan.anchored for lit, _ in g.literals] + [lit for lit, _ in plan.direct]
    assert sorted(literals) == sorted({m.literal for m in MATCHERS})  # each literal searched once
    traffic = "\n".join(TRAFFIC)
    assert all(g.char not in traffic for g in plan.anchored if g.sparse)
    # a user's rule is planned the same way: its literal is found through a character it holds
    user = parse_rules('[[rule]]\nid = "u"\nkind = "context"\nprefilter = "zebra crossing"\npatterns = ["zebra"]\n')
    (group,) = Prefilter([m.literal for m in user.matchers]).plan(text, LogText(text).sample).anchored
    assert group.char in "zb" and group.sparse


def test_short_texts_are_searched_directly():
    plan = prefilter_for(MATCHERS).plan("short log")
    assert not plan.anchored and len(plan.direct) == len({m.literal for m in MATCHERS})


# --- bounded evidence ----------------------------------------------------------------------------

def test_long_evidence_lines_keep_the_match_and_some_context():
    assert excerpt("short", 0, 5) == "short"
    line = "a" * 5000 + "MATCH" + "b" * 5000
    out = excerpt(line, 5000, 5005)
    assert out == "…" + "a" * EVIDENCE_CONTEXT + "MATCH" + "b" * EVIDENCE_CONTEXT + "…"
    assert excerpt(line, 0, 5) == line[:5 + EVIDENCE_CONTEXT] + "…"
    huge = excerpt("x" * 100 + "y" * 50_000 + "z" * 100, 100, 50_100)  # a match longer than the bound
    assert len(huge) < 3000 and huge.startswith("x" * 100 + "y") and huge.endswith("y" + "z" * 100)


def test_evidence_of_a_pathological_line_is_cut_around_the_match():
    message = "ValueError: No available memory for the cache blocks."
    d = diagnose("noise " * 2000 + message + " trailing" * 500)
    (evidence,) = d.primary.evidence
    assert "No available memory for the cache blocks." in evidence and len(evidence) < 1200
    assert evidence.startswith("…") and evidence.endswith("…")
    wrapped = "INFO 11-24 06:55:12 [a.py:1] " + "z" * 2000 + " No available memory for the\ncache blocks."
    (first, second) = diagnose(wrapped).primary.evidence  # a wrapped record: each line cut apart
    assert first.startswith("…") and first.endswith("for the") and second == "cache blocks."


def test_matches_of_one_rule_in_one_record_are_capped_keeping_the_last():
    line = " ".join(f"CUDA out of memory. Tried to allocate {i}.00 MiB. GPU 0 has a total capacity of 11.76 GiB "
                    f"of which 0 bytes is free." for i in range(1, 41))
    d = diagnose(line)
    assert len(d.findings) == MAX_MATCHES_PER_RECORD
    assert [f.numbers["tried_to_allocate_mib"] for f in d.findings] == list(range(41 - MAX_MATCHES_PER_RECORD, 41))
    assert d.primary.numbers["tried_to_allocate_mib"] == 40  # what it was without the cap: the last one
    assert all(re.search(r"Tried to allocate \d+\.00 MiB", x) for f in d.findings for x in f.evidence)
