"""`prefilter_next`: the characters one of which follows a rule's literal in every match. A line
whose literal is followed by none of them is left out while the log is read (a stats line at
9.5% for a rule of 9x%), and nothing that a rule finds changes."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_observer_prefilter import FRAGMENTS, TRAFFIC

from selfheal.handlers.observer import diagnose, literals, parse_rules
from selfheal.handlers.observer.engine import read_and_scan
from selfheal.handlers.observer.literals import LiteralSearch
from selfheal.handlers.observer.logtext import LogText
from selfheal.handlers.observer.rules import builtin_ruleset
from selfheal.handlers.observer.loader import RuleFileError

MATCHERS = builtin_ruleset().matchers


def _stats(kv: str, waiting: int = 3) -> str:
    return (f"INFO 11-24 06:00:09 [loggers.py:123] Engine 000: Avg prompt throughput: 50.0 tokens/s, "
            f"Running: 8 reqs, Waiting: {waiting} reqs, GPU KV cache usage: {kv}%, Prefix cache hit rate: 0.0%")


def _noted(text: str | bytes) -> set[str]:
    """The lines the literal search selects for the built-in rules, as text: before the test
    that their rules certainly find nothing there (`_quiet`), which would drop a calm one too,
    at a Python step each."""
    log = LogText(text)
    search, selected = LiteralSearch(log, MATCHERS), []
    note = search._note
    search._note = lambda buf, base, at, end, b, idxs: (selected.append(base + at), note(buf, base, at, end, b, idxs))
    for piece in log.chunks():
        search(*piece)
    return {log.line_text(start).rstrip() for start in selected}


@pytest.mark.parametrize("as_bytes", [False, True], ids=["str", "bytes"])
@pytest.mark.parametrize("long", [False, True], ids=["short", "long"])
def test_a_line_whose_literal_is_followed_by_no_such_character_is_left_out(as_bytes, long):
    calm, near_full, other = _stats("9.5", waiting=0), _stats("96.1"), _stats("9", waiting=0)
    # a long log is planned with anchors (the regex of a group), a short one searched directly
    lines = (TRAFFIC * 300 if long else []) + [calm, near_full, other]
    text = "\n".join(lines) + "\n"
    noted = _noted(text.encode() if as_bytes else text)
    assert near_full in noted
    assert calm not in noted and other not in noted


def test_what_the_rules_find_is_the_same_with_and_without_it(monkeypatch):
    lines = [_stats(kv) for kv in ("9.5", "96.1", "9.0", "97.0", "99.9", "9.9", "95.5")]
    text = "\n".join(TRAFFIC * 200 + lines + lines) + "\n"
    with_next = diagnose(text)
    monkeypatch.setattr(literals, "_next_chars", lambda *a: {})
    without = diagnose(text)
    assert with_next.primary and with_next.primary.kind == "kv_cache_pressure"
    assert [(f.kind, f.line, f.numbers) for f in with_next.findings] == \
        [(f.kind, f.line, f.numbers) for f in without.findings]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(FRAGMENTS + [_stats("9.5"), _stats("93.2"), "GPU KV cache usage: 9", "9", "\n"])
                | st.text(max_size=12), max_size=30))
def test_any_text_gives_the_same_hits_with_and_without_it(parts):
    text = "".join(parts)
    hits = [(h.matcher.rule.id, h.key, h.evidence, h.numbers) for h in read_and_scan(text, MATCHERS)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(literals, "_next_chars", lambda *a: {})
        assert [(h.matcher.rule.id, h.key, h.evidence, h.numbers) for h in read_and_scan(text, MATCHERS)] == hits


def test_a_literal_shared_with_a_rule_without_it_keeps_every_line():
    rules = parse_rules('[[rule]]\nid = "t.a"\nkind = "context"\nprefilter = "usage: 9"\nprefilter_next = "0123456789"\n'
                        "patterns = ['usage: 9\\d']\n"
                        '[[rule]]\nid = "t.b"\nkind = "context"\nprefilter = "usage: 9"\npatterns = [\'usage: 9\\.5\']\n')
    hits = read_and_scan("x usage: 9.5%\ny usage: 97%\n", rules.matchers)
    assert sorted((h.matcher.rule.id, h.evidence[0]) for h in hits) == [("t.a", "y usage: 97%"), ("t.b", "x usage: 9.5%")]


@pytest.mark.parametrize("chars", ["0-9\n", "é", "\t"])
def test_prefilter_next_of_other_than_printable_ascii_is_refused(chars):
    text = f'[[rule]]\nid = "t.a"\nkind = "context"\nprefilter = "usage: 9"\nprefilter_next = {chars!r}\npatterns = ["usage"]\n'
    with pytest.raises(RuleFileError, match=r"<rules>:5: rule 't.a': prefilter_next holds printable ASCII characters only"):
        parse_rules(text.replace("'", '"'))
