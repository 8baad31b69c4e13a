"""The rules are data: well-formed, serialisable, compiled once, and refused when malformed."""
from __future__ import annotations

from pathlib import Path

import msgspec
import re

import pytest

from selfheal.handlers.observer import Diagnosis, Finding, builtin_ruleset, diagnose
from selfheal.handlers.observer.engine import compile_rules, expand_pattern, scan
from selfheal.handlers.observer.logtext import LogText
from selfheal.handlers.observer.rules import CONTEXT, KINDS, FixSpec, Number, RuleSpec
from selfheal.schemas.serving import TUNABLE
from test_observer_healthy import HEALTHY
from test_observer_rules import CASES

RULES = builtin_ruleset().rules  # the built-in rules' specs
MATCHERS = builtin_ruleset().matchers  # the built-in rules, compiled once

SAMPLES = Path(__file__).parent / "samples"


def test_rules_round_trip_through_json_as_plain_data():
    encoded = msgspec.json.encode(RULES)
    assert msgspec.json.decode(encoded, type=tuple[RuleSpec, ...]) == RULES


def test_rule_ids_are_unique_and_versioned():
    ids = [r.id for r in RULES]
    assert len(ids) == len(set(ids))
    assert all(r.version == 1 for r in RULES)


def test_every_rule_fires_on_some_sample():
    # proves each pre-filter is consistent with its patterns (else the rule could never fire)
    from tests.observer import test_log_inference, test_source_checks
    texts = [c[1] for c in CASES] + HEALTHY + [p.read_text() for p in SAMPLES.glob("*.log")]
    texts += [c[1] for c in test_log_inference.CASES] + test_log_inference.SILENT + [c[1] for c in test_source_checks.CASES]
    fired = {h.matcher.rule.id for text in texts for h in scan(LogText(text), MATCHERS)}
    assert fired == {r.id for r in RULES}


def test_failure_rules_name_known_kinds_and_fixes():
    for rule in RULES:
        if rule.kind != CONTEXT:
            assert rule.kind in KINDS and all(set(f.set) <= set(TUNABLE) for f in rule.fix)


def test_space_means_optional_whitespace_outside_classes_only():
    assert expand_pattern(r"a b[ x]c\ d") == r"a\s*b[ x]c\ d"
    assert expand_pattern("{int} {size}").startswith(r"(?:\d{1,3}")


def test_a_lost_parenthesis_is_tolerated_only_at_a_word_s_edge():
    # "(9.8/11.6 GiB)" pasted as "9.8/11.6 GiB" still matches; a "(" lost right after a word is
    # not taken as lost, so a class before it cannot try every split of a long number (the
    # hostile 5,000-digit device name of tests/reliability/hostile.py)
    regex = re.compile(expand_pattern(r"device (?:[^\s()]+ )?\((?P<free>{num})/(?P<total>{num}) GiB\)"))
    assert regex.search("device cuda:0 (9.8/11.6 GiB)")["free"] == "9.8"
    assert regex.search("device cuda:0 9.8/11.6 GiB")["free"] == "9.8"
    assert regex.search("device 9.8/11.6 GiB, then")["total"] == "11.6"
    assert regex.search("device gpu09.8/11.6 GiB") is None      # "(" lost right after a word: not read


@pytest.mark.parametrize("change, message", [
    ({"kind": "nonsense"}, "unknown kind"),
    ({"fix": (FixSpec(set={"gpu_memory_utilization": "no_such_fix(free_gib)"}),)}, "unknown function"),
    ({"numbers": (Number(capture="free", key="free_gib", unit="count"),)}, "disagree"),
    ({"numbers": (Number(capture="free", key="free_gib", unit="parsec"),)}, "unknown unit"),
    ({"direction": {"gpu_memory_utilization": "sideways"}}, "direction"),
    ({"marks": ("flip:x",)}, "unknown mark"),
    ({"raise_frame": True, "sustain": 2}, "reads one frame line"),
])
def test_malformed_rules_are_refused(change, message):
    base = next(r for r in RULES if r.id == "vllm.startup_free_memory")
    with pytest.raises(ValueError, match=message):
        compile_rules([msgspec.structs.replace(base, **change)])


def test_findings_and_diagnosis_encode_to_json():
    d = diagnose("ValueError: max_num_batched_tokens (128) must be greater than or equal to max_num_seqs (256).")
    back = msgspec.json.decode(msgspec.json.encode(d), type=Diagnosis)
    assert back == d and isinstance(back.primary, Finding)
